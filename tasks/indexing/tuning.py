"""The search parameter of an approximate index: nprobe / efSearch tuned against exact
search, and the time of one query (reported, never deciding)."""

from __future__ import annotations

import time

import faiss
import numpy as np

from tasks.core.config import IndexConfig
from tasks.indexing.recall import RecallProbe, sweep_search_param


def query_ms(index: faiss.Index, xq: np.ndarray, k: int = 10, n: int = 200) -> float:
    """Milliseconds per query, one query at a time (a batch of one, as a user searches): the
    median over at most `n` of `xq` after one warm-up search. Reported in the card only:
    it depends on this machine and its load, so it never decides what is built."""
    xq = np.ascontiguousarray(xq[:n], dtype="float32")
    index.search(xq[:1], k)
    times = []
    for i in range(len(xq)):
        started = time.perf_counter()
        index.search(xq[i:i + 1], k)
        times.append(time.perf_counter() - started)
    return 1e3 * float(np.median(times)) if times else 0.0


def tune_search_param(index: faiss.Index, x: np.ndarray, nlist: int | None,
                      cfg: IndexConfig, xq: np.ndarray | None = None,
                      int_ids: np.ndarray | None = None
                      ) -> tuple[str | None, int | None, list[dict]]:
    """Smallest nprobe / efSearch meeting `target_recall` recall@10 vs exact search on
    indexed rows searched leave-one-out and on query-like probes `xq` when given.

    Leave-one-out matters: a row finding itself inflates recall, since its own cell is
    always the first probed. Short queries land in other cells than passages do.
    """
    probe = RecallProbe(x, xq, cfg.tune_queries, cfg.seed + 1, int_ids=int_ids)
    return sweep_search_param(index, nlist, probe, cfg.target_recall)
