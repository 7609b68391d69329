"""Near-duplicate search sharded by k-means cell over an executor (`tasks.core.shards`).

The driver holds row numbers, the training sample and the centroids, never the n x d
matrix. Workers read the stage's vector file by name from the shared scratch
(`tasks.storage.scratch`: in place under `paths.data`, or uploaded once to S3 and read by
byte range), copy the rows to compare into a scratch matrix in the order they are compared
(`copy_rows`), assign them to cells in the fixed batches of one process (`assign_span`), and
compare cells in ranges (`pairs_in_span`). Results come back in cell order, so the pairs,
their similarities and their order are those of `tasks.duplicates.cells` in one process.
The driver passes names and row numbers; the vectors never pass through it."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
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
from tasks.duplicates.pairs import text_digests
from tasks.storage.scratch import SharedScratch

ASSIGN_BATCHES = 4  # ASSIGN_BATCH runs of rows per assignment task
COPY_ROWS = 131_072  # vector rows (whole row groups) per copy task, at least
SPANS_PER_THREAD = 16  # cell ranges per worker thread: even ends whatever the cell sizes
log = logging.getLogger(__name__)


VECTORS, CELLS = "vectors.npy", "cells.npy"


@dataclass(frozen=True)
class Scratch:
    """The rows to compare, in comparison order, in the `store` every worker reads. In a
    folder, `vectors.npy` and `cells.npy` are filled in place; on S3 (no writes in place)
    the copy tasks put `vector_parts` (positions and rows) and the assignment spans put
    `cell_parts` (in row order), and each worker builds its own two files from them once."""

    store: SharedScratch
    m: int
    d: int
    vector_parts: tuple[str, ...] = ()
    cell_parts: tuple[str, ...] = ()


def scratch_vectors(scratch: Scratch) -> np.ndarray:
    """The (m, d) float32 rows in comparison order, memory-mapped read-only."""
    if not scratch.store.on_s3:
        return np.load(scratch.store.fetch(VECTORS), mmap_mode="r")

    def build(path: str) -> None:
        out = np.lib.format.open_memmap(path, "w+", "float32", (scratch.m, scratch.d))
        for name in scratch.vector_parts:
            with np.load(scratch.store.fetch(name)) as part:
                out[part["positions"]] = part["x"]
            scratch.store.release(name)
        out.flush()

    return np.load(scratch.store.derive(VECTORS, build), mmap_mode="r")


def scratch_cells(scratch: Scratch) -> np.ndarray:
    """The (m, nprobe) int32 cells of the rows, memory-mapped read-only."""
    if not scratch.store.on_s3:
        return np.load(scratch.store.fetch(CELLS), mmap_mode="r")

    def build(path: str) -> None:
        with open(path, "wb") as f:
            np.save(
                f, np.concatenate([np.load(scratch.store.fetch(n)) for n in scratch.cell_parts])
            )

    return np.load(scratch.store.derive(CELLS, build), mmap_mode="r")


def _put_array(scratch: Scratch, name: str, **arrays: np.ndarray) -> str:
    staged = scratch.store.staging(name)
    with open(staged, "wb") as f:
        if len(arrays) == 1:
            np.save(f, *arrays.values())
        else:
            np.savez(f, **arrays)
    return scratch.store.put(staged, name)


def copy_rows(
    shard: tuple[str, list[int], np.ndarray, np.ndarray], scratch: Scratch
) -> tuple[str, np.ndarray, np.ndarray]:
    """On a worker: read row groups `groups` of the vector file named `source` in the
    store, write each row with a position (>= 0) to that row of the scratch matrix (on S3:
    put them as one part); return the part's name ("" in a folder), the positions in
    `sample` it met and their rows (the driver's training sample)."""
    source, groups, positions, sample = shard
    with pq.ParquetFile(scratch.store.reader(source)) as pf:
        x = arrow_to_vectors(
            pf.read_row_groups(groups, columns=[VECTOR_COLUMN]).column(VECTOR_COLUMN)
        )
    if len(x) != len(positions):
        raise ValueError(
            f"dedup: {source} row groups {groups[0]}..{groups[-1]} hold {len(x)} "
            f"vectors, expected {len(positions)}"
        )
    take = positions >= 0
    name = ""
    if scratch.store.on_s3:
        name = _put_array(
            scratch, f"rows-{groups[0]:06d}.npz", positions=positions[take], x=x[take]
        )
    else:
        out = np.load(scratch.store.fetch(VECTORS), mmap_mode="r+")
        out[positions[take]] = x[take]
        out.flush()
        del out  # unmap before returning: the pages stay in the shared page cache only
    picked = np.flatnonzero(np.isin(positions, sample))
    return name, positions[picked], x[picked]


def assign_span(
    span: tuple[int, int], scratch: Scratch, centroids: np.ndarray, nprobe: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """On a worker: cells of scratch rows start..stop-1 (start a multiple of ASSIGN_BATCH),
    written to the cells file (on S3: put as one part); returns per-cell counts of members
    and of probers, and the part's name ("" in a folder)."""
    start, stop = span
    cells = assign_cells(scratch_vectors(scratch)[start:stop], centroids, nprobe)
    name = ""
    if scratch.store.on_s3:
        name = _put_array(scratch, f"cells-{start:012d}.npy", cells=cells.astype("int32"))
    else:
        out = np.load(scratch.store.fetch(CELLS), mmap_mode="r+")
        out[start:stop] = cells
        out.flush()
    nlist = len(centroids)
    return (
        np.bincount(cells[:, 0], minlength=nlist),
        np.bincount(cells.ravel(), minlength=nlist),
        name,
    )


def pairs_in_span(
    span: tuple[int, int], scratch: Scratch, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """On a worker: pair keys and similarities found in cells lo..hi-1, in cell order."""
    keys, sims = pairs_in_cells(scratch_vectors(scratch), scratch_cells(scratch), *span, threshold)
    return (
        np.concatenate([np.zeros(0, "int64"), *keys]),
        np.concatenate([np.zeros(0, "float32"), *sims]),
    )


def copy_shards(
    source: str, path: Path, positions: np.ndarray, sample: np.ndarray
) -> Iterator[tuple[str, list[int], np.ndarray, np.ndarray]]:
    """Whole row groups of the vector file (at `path` here, `source` in the store), at least
    COPY_ROWS rows a shard, with the scratch position of each row (-1: not compared) and the
    sample positions among them."""
    for groups, first, rows in row_group_spans(path, COPY_ROWS):
        pos = positions[first : first + rows]
        yield source, groups, pos, sample[np.isin(sample, pos)]


def near_order_scratch(
    executor: Executor, path: Path, rows: np.ndarray, n: int, seed: int, store: SharedScratch
) -> tuple[Scratch, np.ndarray]:
    """The vector file's `rows` (row numbers of its `n`, in comparison order) copied by the
    workers into a scratch matrix in `store` (the vector file shared with them once), and
    the training sample (`training_rows` of them)."""
    m = len(rows)
    positions = np.full(n, -1, dtype="int64")
    positions[rows] = np.arange(m)
    sample = training_rows(m, seed)
    with pq.ParquetFile(path) as pf:
        d = pf.schema_arrow.field(VECTOR_COLUMN).type.list_size
    if not store.on_s3:
        np.lib.format.open_memmap(
            os.path.join(store.root, VECTORS), "w+", "float32", (m, d)
        ).flush()
    xt = np.empty((len(sample), d), dtype="float32")
    started, parts = time.perf_counter(), []
    shards = copy_shards(store.share_input(path), path, positions, sample)
    for name, pos, x in map_ordered(executor, copy_rows, shards, Scratch(store, m, d)):
        xt[np.searchsorted(sample, pos)] = x
        parts.append(name)
    log.info("dedup: %d vectors copied to the scratch in %.1f s", m, time.perf_counter() - started)
    return Scratch(store, m, d, tuple(p for p in parts if p)), xt


def _even_spans(cost: np.ndarray, parts: int) -> list[tuple[int, int]]:
    """Cell ranges of about equal summed `cost`, covering every cell, in order."""
    cum = np.cumsum(cost, dtype="float64")
    cuts = np.searchsorted(cum, cum[-1] * np.arange(1, parts) / parts, side="right")
    edges = np.unique(np.concatenate([[0], cuts, [len(cost)]]))
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def assign_all(
    executor: Executor, scratch: Scratch, centroids: np.ndarray, nprobe: int
) -> tuple[Scratch, np.ndarray, np.ndarray]:
    """Every scratch row assigned to its `nprobe` cells on the workers (`assign_span`);
    the scratch with its cell parts (S3), and per-cell counts of members and probers."""
    if not scratch.store.on_s3:
        np.lib.format.open_memmap(
            os.path.join(scratch.store.root, CELLS), "w+", "int32", (scratch.m, nprobe)
        ).flush()
    step = ASSIGN_BATCH * ASSIGN_BATCHES
    spans = [(s, min(s + step, scratch.m)) for s in range(0, scratch.m, step)]
    nlist = len(centroids)
    home, probe, parts = np.zeros(nlist, "int64"), np.zeros(nlist, "int64"), []
    for h, p, name in map_ordered(executor, assign_span, spans, scratch, centroids, nprobe):
        home += h
        probe += p
        parts.append(name)
    return replace(scratch, cell_parts=tuple(p for p in parts if p)), home, probe


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
    scratch, home, probe = assign_all(executor, scratch, centroids, min(nprobe, nlist))
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


def file_digests(shard: tuple[str, list[int]]) -> np.ndarray:
    """On a worker: `text_digests` of the `text` column of row groups `groups` of the
    Parquet file at `path` (read there, in place)."""
    path, groups = shard
    store = SharedScratch(os.path.dirname(path))  # a folder scratch: the path read in place
    with pq.ParquetFile(store.reader(path)) as pf:
        return text_digests(pf.read_row_groups(groups, columns=["text"]).column("text").to_pylist())


def digests_by_path(executor: Executor, path: Path, rows: int) -> np.ndarray:
    """`text_digests` of every row of the Parquet file at `path`, in file order, its row
    groups (at least `rows` rows a shard) read by path on the workers: the driver sends
    paths and receives 32 B a row, never the texts."""
    shards = ((str(path.resolve()), groups) for groups, _, _ in row_group_spans(path, rows))
    return np.concatenate([np.zeros(0, "S32"), *map_ordered(executor, file_digests, shards)])
