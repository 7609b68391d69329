"""An IVF index larger than the driver's memory, as faiss's `benchs/distributed_ondisk` builds
one: train once on a sample, write the empty trained index, add shards into copies of it on
the workers (each written to a file), merge their inverted lists on disk into one
`index.ivfdata`, and search it memory-mapped.

The merged lists hold each list's entries in shard order, then add order: the same entries,
in the same order, as one process adding every row, so searches return the same ids.
`index.faiss` names its lists file by base name only, so the folder can be moved, published
or downloaded whole; `read_index_file` finds the lists beside it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq
from faiss.contrib.ondisk import merge_ondisk

from tasks.core.catalog import INDEX_IVFDATA, VECTOR_COLUMN
from tasks.core.shards import Executor, map_ordered, row_group_spans
from tasks.core.vectors import arrow_to_vectors
from tasks.storage.scratch import SharedScratch

ADD_BATCH = 65_536
ONDISK_SHARD_ROWS = 262_144  # vectors a shard file holds: few files to merge, bounded memory
TRAINED, MERGED_LISTS, MERGED_INDEX = "trained.index", "merged.ivfdata", "merged.index"
# A shard: (vectors, ids) sent as arrays, (vector file path, row groups, ids) read there, or
# (name of an .npy file in the scratch, ids).
Shard = tuple[np.ndarray, np.ndarray] | tuple[str, list[int], np.ndarray] | tuple[str, np.ndarray]


def index_bytes(index: faiss.Index, n: int) -> int:
    """Bytes the inverted lists of `n` vectors take in memory (codes and 8-byte ids), plus
    the quantizer: what `index.on_disk: auto` compares with `index.memory_budget_mb`."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return n * index.d * 4
    return n * (ivf.code_size + 8) + ivf.nlist * ivf.d * 4


def wants_on_disk(setting: str | bool, index: faiss.Index, n: int, budget_mb: float) -> bool:
    """Whether the lists go on disk: `true`, or `auto` past the budget; IVF indexes only."""
    if faiss.try_extract_index_ivf(index) is None or setting is False:
        return False
    return setting is True or index_bytes(index, n) > budget_mb * 2**20


def read_rows(path: Path | str, rows: np.ndarray) -> np.ndarray:
    """The vectors of sorted `rows` of a Parquet vector file, one row group at a time: the
    training sample without the whole matrix."""
    with pq.ParquetFile(path) as pf:
        d = pf.schema_arrow.field(VECTOR_COLUMN).type.list_size
        out = np.empty((len(rows), d), dtype="float32")
        start = done = 0
        for g in range(pf.metadata.num_row_groups):
            stop = start + pf.metadata.row_group(g).num_rows
            lo, hi = np.searchsorted(rows, [start, stop])
            if hi > lo:
                x = _group_vectors(pf, [g])
                out[done : done + hi - lo] = x[rows[lo:hi] - start]
                done += hi - lo
            start = stop
    return out


def _group_vectors(pf: pq.ParquetFile, groups: list[int]) -> np.ndarray:
    return arrow_to_vectors(
        pf.read_row_groups(groups, columns=[VECTOR_COLUMN]).column(VECTOR_COLUMN)
    )


def shard_vectors(shard: Shard, store: SharedScratch) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, ids) of a shard: sent as arrays, row groups of a Parquet file named in the
    `store` (read by byte range on S3), or an .npy file put there (`put_shards`)."""
    if isinstance(shard[0], np.ndarray):
        return shard[0], shard[1]
    if len(shard) == 3:
        path, groups, ids = shard
        with pq.ParquetFile(store.reader(path)) as pf:
            return _group_vectors(pf, groups), ids
    name, ids = shard
    x = np.load(store.fetch(name))
    store.release(name)  # read once: no copy stays behind on the worker
    return x, ids


def fill_shard(item: tuple[int, Shard], trained: str, store: SharedScratch) -> str:
    """On a worker: the trained empty index (the file `trained` in `store`) with one shard
    added, put in the store as `shard-<n>.index` (whole or not at all); returns its name."""
    n, shard = item
    index = faiss.read_index(store.fetch(trained))
    x, ids = shard_vectors(shard, store)
    if len(x) != len(ids):
        raise ValueError(f"index: shard {n} has {len(x)} vectors for {len(ids)} ids")
    for start in range(0, len(x), ADD_BATCH):
        index.add_with_ids(
            np.ascontiguousarray(x[start : start + ADD_BATCH], dtype="float32"),
            np.ascontiguousarray(ids[start : start + ADD_BATCH], dtype="int64"),
        )
    name = f"shard-{n:06d}.index"
    staged = store.staging(name)
    faiss.write_index(index, staged)
    return store.put(staged, name)


def file_shards(path: Path | str, ids: np.ndarray, rows: int) -> Iterator[Shard]:
    """Whole row groups of a Parquet vector file, at least `rows` rows a shard, with their
    ids (`ids[i]` for row i): workers read the vectors themselves, by path."""
    for groups, first, count in row_group_spans(path, rows):
        yield str(Path(path).resolve()), groups, ids[first : first + count]


def array_shards(x: np.ndarray, ids: np.ndarray, rows: int) -> Iterator[Shard]:
    """Slices of vectors already in memory, sent to the workers as arrays."""
    for start in range(0, len(x), rows):
        yield x[start : start + rows], ids[start : start + rows]


def put_shards(store: SharedScratch, x: np.ndarray, ids: np.ndarray, rows: int) -> Iterator[Shard]:
    """Slices of vectors in memory put in the store as .npy files, one at a time as the
    executor asks for them: the workers fetch them by name."""
    for start in range(0, len(x), rows):
        name = f"vectors-{start:012d}.npy"
        staged = store.staging(name)
        with open(staged, "wb") as f:
            np.save(f, np.ascontiguousarray(x[start : start + rows], dtype="float32"))
        yield store.put(staged, name), ids[start : start + rows]


def merge_shards(
    parts: list[str], trained: str, lists_name: str, store: SharedScratch
) -> tuple[str, str]:
    """On a worker (or here): the shard files' lists merged, in order, into one lists file
    (shard files memory-mapped, lists appended: no list is held in memory) and the index
    file that names it by the base name `lists_name`; both put in the store, their names
    returned (lists, index)."""
    index = faiss.read_index(store.fetch(trained))
    staged = store.staging(MERGED_LISTS)
    merge_ondisk(index, [store.fetch(p) for p in parts], staged)
    invlists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists)
    invlists.filename = lists_name
    staged_index = store.staging(MERGED_INDEX)
    faiss.write_index(index, staged_index)
    del index, invlists  # unmap the lists before they move
    return store.put(staged, MERGED_LISTS), store.put(staged_index, MERGED_INDEX)


def build_on_disk(
    executor: Executor,
    trained: faiss.Index,
    shards: Iterator[Shard],
    lists: Path,
    store: SharedScratch,
) -> faiss.Index:
    """`trained` (empty) with every shard added on the executor and the inverted lists
    merged on disk, the merge itself run on the executor too, into the file `lists` here:
    the driver holds the quantizer and maps the lists read-only, never loads them. Shard
    files live in `store` (a folder the workers share, or S3)."""
    if trained.ntotal:
        raise ValueError(
            f"index: an on-disk build starts from an empty trained index, "
            f"this one holds {trained.ntotal} vectors"
        )
    staged = store.staging(TRAINED)
    faiss.write_index(trained, staged)
    name = store.put(staged, TRAINED)
    parts = list(map_ordered(executor, fill_shard, enumerate(shards), name, store))
    lists_part, index_part = next(
        map_ordered(executor, merge_shards, [parts], name, lists.name, store)
    )
    merged = lists.with_name(f"{lists.name}.index")
    store.take(lists_part, lists)
    store.take(index_part, merged)
    index = faiss.read_index(str(merged), faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY)
    os.remove(merged)
    return index


def _ondisk_lists(index: faiss.Index) -> faiss.OnDiskInvertedLists | None:
    ivf = faiss.try_extract_index_ivf(index)
    invlists = None if ivf is None else faiss.downcast_InvertedLists(ivf.invlists)
    return invlists if isinstance(invlists, faiss.OnDiskInvertedLists) else None


def lists_file(index: faiss.Index) -> Path | None:
    """The on-disk lists file an index reads from (None for lists in memory)."""
    invlists = _ondisk_lists(index)
    return None if invlists is None else Path(invlists.filename)


def write_index_file(index: faiss.Index, path: Path) -> None:
    """Write `index` to `path`; an on-disk index's lists file is moved beside it as
    `index.ivfdata`, and the index file names it by that base name only (the folder can
    move: `read_index_file` looks beside the index file)."""
    invlists = _ondisk_lists(index)
    if invlists is None:
        faiss.write_index(index, str(path))
        return
    lists, target = Path(invlists.filename), path.parent / INDEX_IVFDATA.name
    invlists.filename = INDEX_IVFDATA.name
    try:
        faiss.write_index(index, str(path))
    finally:
        invlists.filename = str(lists)
    if lists.resolve() != target.resolve():
        os.replace(lists, target)  # the open mapping follows the file
        invlists.filename = str(target)


def read_index_file(path: Path | str) -> faiss.Index:
    """An index file as written; with `index.ivfdata` beside it, its lists memory-mapped
    from there (read-only: searching never loads them into memory)."""
    path = Path(path)
    if not (path.parent / INDEX_IVFDATA.name).is_file():
        return faiss.read_index(str(path))
    return faiss.read_index(str(path), faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY)
