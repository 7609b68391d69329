"""Duplicate pairs in one process: exact ones by a digest of the normalised text, near ones
by inner product at a cosine threshold (exact search below `exact_search_below` vectors,
k-means cells above: no n x n matrix). Memory is O(n*d)."""

from __future__ import annotations

import hashlib
import re
import unicodedata

import faiss
import numpy as np
import pyarrow as pa

from tasks.core.config import DedupConfig
from tasks.core.progress import Progress
from tasks.duplicates.cells import (
    assign_cells,
    cell_count,
    pairs_in_cells,
    train_cells,
    training_rows,
    unique_pairs,
)

_QUERY_BATCH = 4096


def _normalised(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip().casefold()


def text_digests(texts: list[str]) -> np.ndarray:
    """sha256 of each text with case, Unicode form and whitespace normalised away, as 32
    raw bytes (`S32`): ~32 B a row however long the text."""
    return np.array([hashlib.sha256(_normalised(t).encode("utf-8")).digest() for t in texts],
                    dtype="S32")


def shard_digests(shard: pa.Table) -> np.ndarray:
    """On a worker (or here): `text_digests` of one shard's `text` column."""
    return text_digests(shard.column("text").to_pylist())


def first_of_keys(keys: np.ndarray) -> np.ndarray:
    """For each row, the index of the first row with the same key (self if none)."""
    if not len(keys):
        return np.zeros(0, dtype="int64")
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first[inverse.ravel()].astype("int64")


def exact_duplicates(texts: list[str]) -> np.ndarray:
    """For each row, the index of the first row with the same normalised text (self if none)."""
    return first_of_keys(text_digests(texts))


def flat_pairs(x: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact range search; each pair is kept from its earlier row's query (symmetric)."""
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    src, dst, sim = [], [], []
    for start in range(0, len(x), _QUERY_BATCH):
        lims, dist, ids = index.range_search(x[start:start + _QUERY_BATCH], threshold)
        rows = np.repeat(np.arange(start, start + len(lims) - 1), np.diff(lims).astype("int64"))
        keep = ids > rows
        src.append(rows[keep])
        dst.append(ids[keep])
        sim.append(dist[keep])
    return np.concatenate(src), np.concatenate(dst), np.concatenate(sim).astype("float32")


def _ivf_pairs(x: np.ndarray, cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SemDeDup-style, in one process (`tasks.duplicates.cells`): cells trained on a
    sample, each row compared with the rows living in its `nprobe` nearest cells.

    A pair is found when either row's nearest cells hold the other.
    """
    n = len(x)
    nlist = cell_count(n)
    centroids = train_cells(x[training_rows(n, cfg.seed)], nlist, cfg.seed)
    cells = assign_cells(x, centroids, min(cfg.nprobe, nlist))
    with Progress("dedup", n, "chunks") as bar:
        keys, sims = pairs_in_cells(x, cells, 0, nlist, cfg.threshold, bar.advance)
    return unique_pairs(keys, sims, n)


def near_duplicate_pairs(x: np.ndarray, cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray,
                                                                     np.ndarray]:
    """(i, j, similarity) for every pair i < j with cosine >= threshold (unit vectors).

    Exact below `exact_search_below` rows; above, a pair is missed only when neither row's
    `nprobe` nearest cells hold the other. Memory O(n*d) plus the pairs found.
    """
    x = np.ascontiguousarray(x, dtype="float32")
    if len(x) < 2:
        return np.zeros(0, "int64"), np.zeros(0, "int64"), np.zeros(0, "float32")
    if len(x) < cfg.exact_search_below:
        return flat_pairs(x, cfg.threshold)
    return _ivf_pairs(x, cfg)
