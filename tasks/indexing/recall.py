"""Recall against exact search: the one measure of an approximate index's quality.

Two probe sets: indexed rows searched leave-one-out, and query-like probes (short queries land
in other IVF cells than the passages they should find). The sweep walks nprobe (IVF) or
efSearch (HNSW) up until a target recall is met.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import faiss
import numpy as np

from tasks.core.progress import Progress
from tasks.core.vectors import sample_rows
from tasks.indexing.ids import IdMap


def set_search_param(index: faiss.Index, name: str | None, value: int | None) -> None:
    """Set nprobe / efSearch through FAISS's ParameterSpace (works on wrapped indexes too)."""
    if name is not None and value is not None:
        faiss.ParameterSpace().set_index_parameter(index, name, value)


def recall_at_k(found: Sequence[np.ndarray], truth: Sequence[np.ndarray]) -> float:
    """Fraction of the exact top-k ids (`truth`, one row per query) present in `found`."""
    total, hits = 0, 0
    for f, t in zip(found, truth, strict=True):
        t_ids = {int(i) for i in t if i >= 0}
        total += len(t_ids)
        hits += len(t_ids & {int(i) for i in f if i >= 0})
    return round(hits / total, 6) if total else 1.0


def _candidates(index: faiss.Index, nlist: int | None) -> tuple[str | None, list[int]]:
    if nlist is not None:
        return "nprobe", sorted({min(2**p, nlist) for p in range(0, 16) if 2 ** (p - 1) < nlist})
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    if hasattr(inner, "hnsw"):
        return "efSearch", [16, 32, 64, 128, 256, 512]
    return None, []


def _exact(xq: np.ndarray, xb: np.ndarray, k: int) -> np.ndarray:
    """Row numbers of the exact top-k inner products of `xq` against `xb`."""
    return faiss.knn(np.ascontiguousarray(xq, dtype="float32"), xb, k,
                     metric=faiss.METRIC_INNER_PRODUCT)[1]


def _without_self(ids: np.ndarray, rows: np.ndarray, k: int) -> list[np.ndarray]:
    """Drop each query's own row from its result list (leave-one-out), keep k."""
    return [r[r != q][:k] for r, q in zip(ids, rows, strict=True)]


class RecallProbe:
    """Exact top-k answers for two probe sets: indexed rows (leave-one-out) and queries.

    Args:
        x: the indexed vectors, row i having FAISS id `int_ids[i]` (i when None).
        xq: query-like probe vectors, or None.
        n_rows: how many indexed rows to probe with.
    """

    def __init__(self, x: np.ndarray, xq: np.ndarray | None, n_rows: int, seed: int,
                 k: int = 10, int_ids: np.ndarray | None = None) -> None:
        self.rows = sample_rows(len(x), n_rows, seed)
        self.xr, self.k = x[self.rows], k
        self.id_map = IdMap(np.arange(len(x)) if int_ids is None else int_ids)
        self.xq = None if xq is None or not len(xq) else np.ascontiguousarray(xq, "float32")
        # exact search straight over `x` (FAISS's brute-force kNN, what IndexFlatIP runs),
        # not over a flat index holding a second copy of every vector
        xb = np.ascontiguousarray(x, dtype="float32")
        self.kk = min(k + 1, len(x))
        self.gt_rows = _without_self(_exact(self.xr, xb, self.kk), self.rows, k)
        self.gt_q = None if self.xq is None else _exact(self.xq, xb, min(k, len(x)))

    def _rows(self, index: faiss.Index, xq: np.ndarray, k: int) -> np.ndarray:
        return self.id_map.rows(index.search(xq, k)[1])

    def measure(self, index: faiss.Index) -> dict[str, float]:
        """recall@k of `index` as currently set, on both probe sets, and ms per query."""
        out = {"recall_corpus": recall_at_k(
            _without_self(self._rows(index, self.xr, self.kk), self.rows, self.k),
            self.gt_rows)}
        if self.xq is not None:
            started = time.perf_counter()
            found = self._rows(index, self.xq, self.gt_q.shape[1])
            out["ms_per_query"] = round(1e3 * (time.perf_counter() - started) / len(self.xq), 4)
            out["recall_queries"] = recall_at_k(found, self.gt_q)
        return out


def sweep_search_param(index: faiss.Index, nlist: int | None, probe: RecallProbe,
                       target: float | None = None) -> tuple[str | None, int | None, list[dict]]:
    """Recall per nprobe (IVF) / efSearch (HNSW) value; with `target`, stop at the first
    value meeting it on every probe set and leave the index set to it."""
    name, values = _candidates(index, nlist)
    if name is None:
        return None, None, []
    sweep, chosen = [], values[-1]
    with Progress(f"{name} sweep", len(values), "settings") as bar:
        for v in values:
            set_search_param(index, name, v)
            sweep.append({name: v, **probe.measure(index)})
            bar.advance(1)
            worst = min(sweep[-1].get("recall_queries", 1.0), sweep[-1]["recall_corpus"])
            if target is not None and worst >= target:
                chosen = v
                break
    set_search_param(index, name, chosen)
    return name, chosen, sweep
