"""Hard negatives: chunks that BM25 or the base model ranks high for a pair's anchor, never
from the positive's own document nor from its duplicate group.

A duplicate group is what dedup would merge: the same normalised text, or (when the base
model's vectors are at hand) a cosine of `dedup.threshold` or more to the positive.
"""

from __future__ import annotations

from collections.abc import Callable

import faiss
import numpy as np
import pyarrow as pa

from tasks.core.config import SearchConfig
from tasks.core.fingerprint import sha256_text
from tasks.query.lexical import LexicalIndex, build_lexical

DEPTH = 20  # candidates looked at per anchor; one is drawn among the eligible ones
RANDOM_TRIES = 16  # random rows tried when no candidate is eligible
Encode = Callable[[list[str], bool], np.ndarray]  # (texts, as_queries) -> unit vectors


def text_key(text: str) -> str:
    """What exact dedup compares: the text, case and spacing aside."""
    return sha256_text(" ".join(text.lower().split()))


def bm25_candidates(anchors: list[str], pool: list[str], depth: int = DEPTH) -> np.ndarray:
    """(n, depth) rows of `pool` BM25 ranks highest for each anchor, -1 past the matches."""
    cfg = SearchConfig()
    lexical = LexicalIndex(build_lexical(pool, cfg), cfg, np.arange(len(pool)))
    return lexical.search(anchors, depth)[1]


def dense_candidates(xq: np.ndarray, xb: np.ndarray, depth: int = DEPTH) -> np.ndarray:
    """(n, depth) rows of `xb` nearest each query vector (inner product, exact)."""
    index = faiss.IndexFlatIP(xb.shape[1])
    index.add(np.ascontiguousarray(xb, dtype="float32"))
    return index.search(np.ascontiguousarray(xq, dtype="float32"), min(depth, len(xb)))[1]


def _eligible(cands: np.ndarray, pos_doc: str, pos_key: str, pool_docs: list[str],
              pool_keys: list[str], near: Callable[[int], bool]) -> list[int]:
    return [int(c) for c in cands if c >= 0 and pool_docs[c] != pos_doc
            and pool_keys[c] != pos_key and not near(int(c))]


def pick_negatives(pairs: pa.Table, pool: pa.Table, candidates: list[np.ndarray],
                   seed: int, near_dup: Callable[[int, int], bool] | None = None
                   ) -> list[str | None]:
    """One negative text per pair: drawn among the eligible candidates, else a random chunk
    of another document (None when the pool has none).

    Args:
        pairs: anchor, positive, doc_id rows.
        pool: the chunks negatives come from (doc_id, text).
        candidates: per source (BM25, dense), (n_pairs, depth) pool rows; pair i draws
            from source i mod len(candidates), so both kinds are present when both are asked.
        near_dup: `near_dup(pair, pool_row)` says the row is in the positive's duplicate
            group by similarity.
    """
    rng = np.random.default_rng(seed)
    pool_docs, texts = pool.column("doc_id").to_pylist(), pool.column("text").to_pylist()
    pool_keys = [text_key(t or "") for t in texts]
    out: list[str | None] = []
    for i, (pos, doc) in enumerate(zip(pairs.column("positive").to_pylist(),
                                       pairs.column("doc_id").to_pylist(), strict=True)):
        cands = candidates[i % len(candidates)][i]
        ok = _eligible(cands, doc, text_key(pos), pool_docs, pool_keys,
                       (lambda c, i=i: near_dup(i, c)) if near_dup else (lambda c: False))
        if not ok:  # nothing close is eligible: a random chunk of another document
            draws = rng.integers(len(texts), size=RANDOM_TRIES)
            ok = _eligible(draws, doc, text_key(pos), pool_docs, pool_keys, lambda c: False)[:1]
        out.append(texts[ok[int(rng.integers(len(ok)))]] if ok else None)
    return out


def mine_negatives(pairs: pa.Table, pool: pa.Table, how: str, seed: int, threshold: float,
                   encode: Encode | None = None) -> tuple[list[str | None], dict[str, int]]:
    """Negatives for `pairs` from `pool` (`how`: bm25, dense or both); (negatives, counts).

    `encode` embeds texts with the base model (needed for dense and both); its vectors also
    find the positive's near duplicates (cosine >= `threshold`, dedup's own rule).
    """
    anchors, texts = pairs.column("anchor").to_pylist(), pool.column("text").to_pylist()
    sources: list[np.ndarray] = []
    if how in ("bm25", "both"):
        sources.append(bm25_candidates(anchors, texts))
    near_dup = None
    if how in ("dense", "both"):
        if encode is None:
            raise ValueError(f"finetune.negatives={how!r} needs the base model's vectors")
        xb = encode(texts, False)
        sources.append(dense_candidates(encode(anchors, True), xb))
        xp = encode(pairs.column("positive").to_pylist(), False)
        near_dup = lambda i, c: float(xp[i] @ xb[c]) >= threshold  # noqa: E731
    negatives = pick_negatives(pairs, pool, sources, seed, near_dup)
    return negatives, {"with_negative": sum(n is not None for n in negatives),
                       "without_negative": sum(n is None for n in negatives)}
