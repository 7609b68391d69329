"""Near-duplicate search sharded by k-means cell over an executor (`tasks.core.shards`).

The driver holds row numbers, the training sample and the centroids, never the n x d
matrix. Workers read the stage's vector file by path (row groups), copy the rows to compare
into a scratch matrix in the order they are compared (`copy_rows`), assign them to cells in
the fixed batches of one process (`assign_span`), and compare cells in ranges
(`pairs_in_span`). Results come back in cell order, so the pairs, their similarities and
their order are those of `tasks.duplicates.cells` in one process. The scratch files live
beside the stage's output (`paths.data`): workers must share that storage with the driver.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from tasks.core.catalog import VECTOR_COLUMN
from tasks.core.progress import Progress
from tasks.core.shards import Executor, map_ordered, row_group_spans
from tasks.core.vectors import arrow_to_vectors
from tasks.duplicates.cells import (
    ASSIGN_BATCH,
    assign_cells,
    cell_count,
    pairs_in_cells,
    train_cells,
    training_rows,
    unique_pairs,
)

ASSIGN_BATCHES = 4  # ASSIGN_BATCH runs of rows per assignment task
COPY_ROWS = 131_072  # vector rows (whole row groups) per copy task, at least
SPANS_PER_THREAD = 16  # cell ranges per worker thread: even ends whatever the cell sizes
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scratch:
    """The rows to compare, in comparison order, on storage every worker reads by path."""

    vectors: str  # (m, d) float32 .npy
    cells: str  # (m, nprobe) int32 .npy, filled by `assign_span`
    m: int
    d: int


def _open(path: str, mode: str = "r") -> np.ndarray:
    try:
        return np.load(path, mmap_mode=mode)
    except FileNotFoundError:
        raise ValueError(
            f"dedup: scratch file {path} is not visible here; dedup on Dask "
            "needs paths.data on storage the workers share"
        ) from None


def copy_rows(
    shard: tuple[str, list[int], np.ndarray, np.ndarray], scratch: Scratch
) -> tuple[np.ndarray, np.ndarray]:
    """On a worker: read row groups `groups` of the vector file `path`, write each row with a
    position (>= 0) to that row of the scratch matrix; return the positions in `sample` it
    met and their rows (the driver's training sample)."""
    path, groups, positions, sample = shard
    if not os.path.isfile(path):
        raise ValueError(
            f"dedup: vector file {path} is not visible here; dedup on Dask "
            "needs paths.data on storage the workers share"
        )
    with pq.ParquetFile(path) as pf:
        x = arrow_to_vectors(
            pf.read_row_groups(groups, columns=[VECTOR_COLUMN]).column(VECTOR_COLUMN)
        )
    if len(x) != len(positions):
        raise ValueError(
            f"dedup: {path} row groups {groups[0]}..{groups[-1]} hold {len(x)} "
            f"vectors, expected {len(positions)}"
        )
    take = positions >= 0
    out = _open(scratch.vectors, "r+")
    out[positions[take]] = x[take]
    out.flush()
    del out  # unmap before returning: the pages stay in the shared page cache only
    picked = np.flatnonzero(np.isin(positions, sample))
    return positions[picked], x[picked]


def assign_span(
    span: tuple[int, int], scratch: Scratch, centroids: np.ndarray, nprobe: int
) -> tuple[np.ndarray, np.ndarray]:
    """On a worker: cells of scratch rows start..stop-1 (start a multiple of ASSIGN_BATCH),
    written to the cells file; returns per-cell counts of members and of probers."""
    start, stop = span
    x = _open(scratch.vectors)
    cells = assign_cells(x[start:stop], centroids, nprobe)
    out = _open(scratch.cells, "r+")
    out[start:stop] = cells
    out.flush()
    nlist = len(centroids)
    return (np.bincount(cells[:, 0], minlength=nlist), np.bincount(cells.ravel(), minlength=nlist))


def pairs_in_span(
    span: tuple[int, int], scratch: Scratch, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """On a worker: pair keys and similarities found in cells lo..hi-1, in cell order."""
    keys, sims = pairs_in_cells(_open(scratch.vectors), _open(scratch.cells), *span, threshold)
    return (
        np.concatenate([np.zeros(0, "int64"), *keys]),
        np.concatenate([np.zeros(0, "float32"), *sims]),
    )


def copy_shards(
    path: Path, positions: np.ndarray, sample: np.ndarray
) -> Iterator[tuple[str, list[int], np.ndarray, np.ndarray]]:
    """Whole row groups of the vector file, at least COPY_ROWS rows a shard, with the
    scratch position of each row (-1: not compared) and the sample positions among them."""
    for groups, first, rows in row_group_spans(path, COPY_ROWS):
        pos = positions[first : first + rows]
        yield str(path), groups, pos, sample[np.isin(sample, pos)]


@contextmanager
def near_order_scratch(
    executor: Executor, path: Path, rows: np.ndarray, n: int, seed: int, where: Path
) -> Iterator[tuple[Scratch, np.ndarray]]:
    """The vector file's `rows` (row numbers of its `n`, in comparison order) copied by the
    workers into a scratch matrix under `where`, and the training sample
    (`training_rows` of them); the scratch is removed after the block."""
    m = len(rows)
    positions = np.full(n, -1, dtype="int64")
    positions[rows] = np.arange(m)
    sample = training_rows(m, seed)
    tmp = Path(tempfile.mkdtemp(prefix=".dedup-scratch-", dir=where))
    try:
        with pq.ParquetFile(path) as pf:
            d = pf.schema_arrow.field(VECTOR_COLUMN).type.list_size
        scratch = Scratch(str(tmp / "vectors.npy"), str(tmp / "cells.npy"), m, d)
        np.lib.format.open_memmap(scratch.vectors, "w+", "float32", (m, d)).flush()
        xt = np.empty((len(sample), d), dtype="float32")
        started = time.perf_counter()
        for pos, x in map_ordered(
            executor, copy_rows, copy_shards(path, positions, sample), scratch
        ):
            xt[np.searchsorted(sample, pos)] = x
        log.info(
            "dedup: %d vectors copied to the scratch in %.1f s", m, time.perf_counter() - started
        )
        yield scratch, xt
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _even_spans(cost: np.ndarray, parts: int) -> list[tuple[int, int]]:
    """Cell ranges of about equal summed `cost`, covering every cell, in order."""
    cum = np.cumsum(cost, dtype="float64")
    cuts = np.searchsorted(cum, cum[-1] * np.arange(1, parts) / parts, side="right")
    edges = np.unique(np.concatenate([[0], cuts, [len(cost)]]))
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def sharded_ivf_pairs(
    executor: Executor, scratch: Scratch, xt: np.ndarray, nprobe: int, threshold: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, similarity) as `tasks.duplicates.cells` finds them in one process: centroids
    trained here on `xt`, rows assigned and cells compared on the workers."""
    nlist, started = cell_count(scratch.m), time.perf_counter()
    centroids = train_cells(xt, nlist, seed)
    log.info(
        "dedup: %d cells trained on %d vectors in %.1f s",
        nlist,
        len(xt),
        time.perf_counter() - started,
    )
    nprobe = min(nprobe, nlist)
    np.lib.format.open_memmap(scratch.cells, "w+", "int32", (scratch.m, nprobe)).flush()
    step = ASSIGN_BATCH * ASSIGN_BATCHES
    spans = [(s, min(s + step, scratch.m)) for s in range(0, scratch.m, step)]
    home, probe = np.zeros(nlist, "int64"), np.zeros(nlist, "int64")
    for h, p in map_ordered(executor, assign_span, spans, scratch, centroids, nprobe):
        home += h
        probe += p
    log.info("dedup: %d vectors assigned, %.1f s in all", scratch.m, time.perf_counter() - started)
    threads = max(1, executor.in_flight // 2)
    keys, sims = [], []
    with Progress("dedup", scratch.m, "chunks") as bar:
        spans = _even_spans(home * probe + home, SPANS_PER_THREAD * threads)
        for (lo, hi), (k, s) in zip(
            spans, map_ordered(executor, pairs_in_span, spans, scratch, threshold), strict=True
        ):
            keys.append(k)
            sims.append(s)
            bar.advance(int(home[lo:hi].sum()))
    log.info(
        "dedup: cells compared in %d spans, %.1f s in all",
        len(spans),
        time.perf_counter() - started,
    )
    return unique_pairs(keys, sims, scratch.m)
