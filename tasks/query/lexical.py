"""The lexical side: BM25 over the indexed chunks (bm25s: sparse matrices, numpy only).

The index holds every chunk: the indexed (kept) ones, then the members of their duplicate
groups, so a token only a dropped twin has (its package name, say) still finds its group.
Hits are reported as rows of the indexed chunks, each group once at its best rank; equal
scores rank in the index's document order (`LexicalIndex.top_documents`).

Tokens keep identifiers whole (`libfoo-dev`, `x86_64`, `http/2`, `c++`) and add their parts,
so a query for `libfoo` finds `libfoo-dev` and a query for `libfoo-dev` ranks it first. Plain
words are lowercased, stopwords dropped and (by default) Snowball-stemmed (snowballstemmer, on
PyStemmer's C stemmers: the same stems); identifiers and their parts are never stemmed. The
index files sit flat in the index folder (`lexical.*`), so the stage manifest hashes each one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from tasks.core.config import SearchConfig

PREFIX = "lexical"
_FILES = {"data_name": f"{PREFIX}.data.npy", "indices_name": f"{PREFIX}.indices.npy",
          "indptr_name": f"{PREFIX}.indptr.npy", "vocab_name": f"{PREFIX}.vocab.json",
          "params_name": f"{PREFIX}.params.json", "nnoc_name": f"{PREFIX}.nonoccurrence.npy"}
_TOKEN = re.compile(r"\w+(?:[-./+#:@]\w+)*[+#]*")
_PARTS = re.compile(r"[-./+#:@_]+")
_SCORED = 1 << 22  # (query, document) scores a block of queries holds at most (one query more)


@lru_cache(maxsize=4)
def _stopwords(kind: str) -> frozenset[str]:
    if kind == "none":
        return frozenset()
    from bm25s.stopwords import STOPWORDS_EN  # noqa: PLC0415

    return frozenset(STOPWORDS_EN)


@lru_cache(maxsize=2)
def _stemmer(kind: str) -> Any:
    if kind == "none":
        return None
    import snowballstemmer  # noqa: PLC0415

    return snowballstemmer.stemmer(kind).stemWord


def _bm25s() -> Any:
    """bm25s, imported lazily; it sets its own logger to DEBUG on import, so its per-call
    lines would reach every terminal a stage or `serve` writes to."""
    import bm25s  # noqa: PLC0415

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def tokenize(text: str, stopwords: str = "en", stemmer: str = "english") -> list[str]:
    """The lexical tokens of `text` (see the module docstring)."""
    terms = _terms_of(stopwords, stemmer)
    return [t for token in _TOKEN.findall(text.lower()) for t in terms(token)]


@lru_cache(maxsize=4)
def _terms_of(stopwords: str, stemmer: str) -> Callable[[str], tuple[str, ...]]:
    """The terms one lowercased token gives (`tokenize`), remembered per distinct token:
    a corpus repeats its words."""
    stop, stem = _stopwords(stopwords), _stemmer(stemmer)

    @lru_cache(maxsize=1 << 18)
    def terms(token: str) -> tuple[str, ...]:
        parts = [p for p in _PARTS.split(token) if p]
        if parts == [token]:  # a plain word
            if token in stop:
                return ()
            return (stem(token) if stem is not None and token.isalpha() else token,)
        return (token, *(p for p in parts if p not in stop))  # an identifier, then its parts

    return terms


def build_lexical(texts: list[str], cfg: SearchConfig) -> Any:
    """A BM25 index (bm25s) over `texts`, row i being text i.

    Token ids are given in first-seen order: bm25s numbers raw tokens in set order, which
    moves with Python's hash seed, and the index files must not differ between processes.
    """
    bm25s = _bm25s()
    vocab: dict[str, int] = {}
    ids = [[vocab.setdefault(t, len(vocab)) for t in tokenize(text, cfg.stopwords, cfg.stemmer)]
           for text in texts]
    index = bm25s.BM25(k1=cfg.bm25_k1, b=cfg.bm25_b)
    index.index(bm25s.tokenization.Tokenized(ids=ids, vocab=vocab), show_progress=False)
    return index


def save_lexical(index: Any, folder: Path) -> None:
    """Write the BM25 index's arrays and vocabulary into `folder` as `lexical.*` files."""
    index.save(str(folder), show_progress=False, **_FILES)


class LexicalIndex:
    """BM25 search over an index folder's chunk rows."""

    def __init__(self, index: Any, cfg: SearchConfig, row_of: np.ndarray) -> None:
        """`row_of[i]`: the indexed row lexical document i stands for (its group's row)."""
        self.index, self.cfg, self.row_of = index, cfg, row_of
        self._scores: Any = None
        self.docs = int(index.scores["num_docs"])
        self.n = int(row_of.max()) + 1 if len(row_of) else 0

    @classmethod
    def load(cls, folder: Path, cfg: SearchConfig, row_of: np.ndarray) -> LexicalIndex:
        index = _bm25s().BM25.load(str(folder), show_progress=False, **_FILES)
        if int(index.scores["num_docs"]) != len(row_of):
            raise ValueError(f"{folder}: the lexical index holds {index.scores['num_docs']} "
                             f"chunks, the folder {len(row_of)}")
        return cls(index, cfg, row_of)

    def tokens(self, queries: list[str]) -> list[list[str]]:
        return [tokenize(q, self.cfg.stopwords, self.cfg.stemmer) for q in queries]

    def search(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows), each (nq, k); rows without a matching token are -1."""
        k = min(k, self.n)
        scores = np.zeros((len(queries), k), dtype="float32")
        rows = np.full((len(queries), k), -1, dtype="int64")
        tokens = self.tokens(queries)
        asked = [i for i, t in enumerate(tokens) if t]
        if not asked or not k:
            return scores, rows
        # a group can hold several of the top documents: look deeper, keep each row once
        found, s = self.top_documents([tokens[i] for i in asked], min(self.docs, 2 * k + 16))
        found = self.row_of[found]
        q, at, rank = _first_of_each_row(found, s > 0, k)  # padded with zero scores
        rows[np.asarray(asked)[q], rank] = found[q, at]
        scores[np.asarray(asked)[q], rank] = s[q, at]
        return scores, rows

    def top_documents(self, queries: list[list[str]], k: int) -> tuple[np.ndarray, np.ndarray]:
        """The `k` best lexical documents of each tokenized query, best first, (documents,
        scores) each (nq, k), padded with document 0 at score 0: BM25 scores as bm25s sums
        them (float32, term by term in the query's order), ties in document order.

        bm25s scores and partitions every document, one query at a time; here the queries'
        term counts times the score matrix scores only the documents holding a query term,
        and equal scores come out in one order, not the partition's."""
        docs = np.zeros((len(queries), k), dtype="int64")
        scores = np.zeros((len(queries), k), dtype="float32")
        block = max(1, min(256, _SCORED // max(self.docs, 1)))
        for lo in range(0, len(queries), block):
            hit = self._term_counts(queries[lo:lo + block]) @ self._matrix()
            for q in range(hit.shape[0]):
                at = slice(hit.indptr[q], hit.indptr[q + 1])
                d, s = _best(hit.indices[at], hit.data[at], k)
                docs[lo + q, :len(d)], scores[lo + q, :len(d)] = d, s
        return docs, scores

    def _matrix(self) -> Any:
        """The index's scores as a (terms x documents) CSR matrix (its data and indices not
        copied)."""
        if self._scores is None:
            from scipy.sparse import csr_matrix  # noqa: PLC0415
            sc = self.index.scores
            self._scores = csr_matrix((sc["data"], sc["indices"], sc["indptr"]),
                                      shape=(len(sc["indptr"]) - 1, self.docs), copy=False)
        return self._scores

    def _term_counts(self, queries: list[list[str]]) -> Any:
        """One row per query, one entry per known token in the query's order (a repeated
        token once per occurrence, as bm25s adds it again), each 1.0."""
        from scipy.sparse import csr_matrix  # noqa: PLC0415
        vocab = self.index.vocab_dict
        ids = [[vocab[t] for t in q if t in vocab] for q in queries]
        indptr = np.cumsum([0] + [len(i) for i in ids])
        cols = np.fromiter((t for i in ids for t in i), dtype="int64", count=int(indptr[-1]))
        return csr_matrix((np.ones(len(cols), dtype="float32"), cols, indptr),
                          shape=(len(queries), self._matrix().shape[0]))

    def doc_freqs(self, tokens: list[str]) -> np.ndarray:
        """How many lexical documents hold each token (0 for a token not in the index)."""
        vocab, indptr = self.index.vocab_dict, self.index.scores["indptr"]
        ids = [vocab.get(t) for t in tokens]
        return np.array([0 if i is None else int(indptr[i + 1] - indptr[i]) for i in ids],
                        dtype="int64")

    def idf(self, tokens: list[str]) -> np.ndarray:
        """BM25 (Lucene) idf of each token over the lexical documents; 0 where absent."""
        df = self.doc_freqs(tokens)
        idf = np.log(1.0 + (self.docs - df + 0.5) / (df + 0.5))
        return np.where(df > 0, idf, 0.0)

    def stored_score(self, token: str, doc: int) -> float:
        """The index's BM25 contribution of `token` to lexical document `doc` (0 if none)."""
        t = self.index.vocab_dict.get(token)
        if t is None:
            return 0.0
        indptr, scores = self.index.scores["indptr"], self.index.scores
        lo, hi = int(indptr[t]), int(indptr[t + 1])
        at = np.flatnonzero(scores["indices"][lo:hi] == doc)
        return float(scores["data"][lo + at[0]]) if len(at) else 0.0

    def masked_score(self, query: list[str], doc: int, original: list[str],
                     masked: list[str]) -> float:
        """The BM25 score `query` would give lexical document `doc` had its tokens been
        `masked` instead of `original`, under the same idf and average length.

        The document's length normalisation is read back from a score the index stored for
        it (BM25: s = idf tf / (tf + k1 norm), norm = 1 - b + b len / avgdl), so the average
        length, which bm25s does not keep, is not needed: the masked norm is
        1 - b + (norm - 1 + b) len' / len.
        """
        if not original or not query:
            return 0.0
        tf_orig = _counts(original)
        probe = original[0]
        s0, idf0 = self.stored_score(probe, doc), float(self.idf([probe])[0])
        k1, b = self.cfg.bm25_k1, self.cfg.bm25_b
        if s0 <= 0 or idf0 <= 0:
            return 0.0
        tf0 = tf_orig[probe]
        norm = (tf0 * idf0 / s0 - tf0) / k1
        norm_m = 1.0 - b + (norm - 1.0 + b) * len(masked) / len(original)
        tf = _counts(masked)
        idf = self.idf(query)
        return float(sum(i * tf[t] / (tf[t] + k1 * norm_m) for t, i in zip(query, idf,
                                                                          strict=True)
                         if tf.get(t) and i > 0))


def _first_of_each_row(rows: np.ndarray, valid: np.ndarray, k: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per list (a row of `rows`, best first), the first `k` valid entries whose row has
    not come earlier in the list: (list, position, rank in the list's output) of each."""
    n = int(rows.max()) + 1 if rows.size else 1
    keys = np.where(valid, np.arange(len(rows))[:, None] * n + rows, -1).ravel()
    _, first = np.unique(keys, return_index=True)  # each list's row, where it came first
    keep = np.zeros(keys.size, dtype=bool)
    keep[first] = True
    keep = (keep & (keys >= 0)).reshape(rows.shape)
    rank = np.cumsum(keep, axis=1) - 1
    q, at = np.nonzero(keep & (rank < k))
    return q, at, rank[q, at]


def _best(docs: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The `k` best of one query's scored documents: score descending, then document."""
    if not k:
        return docs[:0], scores[:0]
    if len(docs) > k:  # every document scoring at least the k-th best, ties included
        keep = scores >= np.partition(scores, len(scores) - k)[len(scores) - k]
        docs, scores = docs[keep], scores[keep]
    order = np.lexsort((docs, -scores))[:k]
    return docs[order], scores[order]


def _counts(tokens: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in tokens:
        out[t] = out.get(t, 0) + 1
    return out
