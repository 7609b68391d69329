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
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq
from faiss.contrib.ondisk import merge_ondisk

from tasks.core.catalog import INDEX_IVFDATA, VECTOR_COLUMN
from tasks.core.shards import Executor, map_ordered, row_group_spans
from tasks.core.vectors import arrow_to_vectors

ADD_BATCH = 65_536
ONDISK_SHARD_ROWS = 262_144  # vectors a shard file holds: few files to merge, bounded memory
# A shard: (vectors, ids) sent as arrays, or (vector file path, row groups, ids) read there.
Shard = tuple[np.ndarray, np.ndarray] | tuple[str, list[int], np.ndarray]


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


def shard_vectors(shard: Shard) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, ids) of a shard, read from its file when it names one."""
    if isinstance(shard[0], str):
        path, groups, ids = shard
        with pq.ParquetFile(path) as pf:
            return _group_vectors(pf, groups), ids
    return shard[0], shard[1]


def fill_shard(item: tuple[int, Shard], trained: str, scratch: str) -> str:
    """On a worker: the trained empty index at path `trained` with one shard added, written
    to `scratch/shard-<n>.index` (whole or not at all); returns that path."""
    n, shard = item
    if not os.path.isfile(trained):
        raise ValueError(
            f"index: {trained} is not visible here; an on-disk build on Dask "
            "needs paths.data on storage the workers share"
        )
    index = faiss.read_index(trained)
    x, ids = shard_vectors(shard)
    if len(x) != len(ids):
        raise ValueError(f"index: shard {n} has {len(x)} vectors for {len(ids)} ids")
    for start in range(0, len(x), ADD_BATCH):
        index.add_with_ids(
            np.ascontiguousarray(x[start : start + ADD_BATCH], dtype="float32"),
            np.ascontiguousarray(ids[start : start + ADD_BATCH], dtype="int64"),
        )
    out = os.path.join(scratch, f"shard-{n:06d}.index")
    faiss.write_index(index, out + ".tmp")
    os.replace(out + ".tmp", out)
    return out


def file_shards(path: Path | str, ids: np.ndarray, rows: int) -> Iterator[Shard]:
    """Whole row groups of a Parquet vector file, at least `rows` rows a shard, with their
    ids (`ids[i]` for row i): workers read the vectors themselves."""
    for groups, first, count in row_group_spans(path, rows):
        yield str(path), groups, ids[first : first + count]


def array_shards(x: np.ndarray, ids: np.ndarray, rows: int) -> Iterator[Shard]:
    """Slices of vectors already in memory, sent to the workers as arrays."""
    for start in range(0, len(x), rows):
        yield x[start : start + rows], ids[start : start + rows]


@contextmanager
def scratch_dir(where: Path) -> Iterator[Path]:
    """A folder under `where` (storage the workers share) removed after the block."""
    tmp = Path(tempfile.mkdtemp(prefix=".index-scratch-", dir=where))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def merge_shards(parts: list[str], trained: str, lists: str) -> str:
    """On a worker (or here): the shard files' lists merged, in order, into the file `lists`
    (shard files memory-mapped, lists appended: no list is held in memory); returns the path
    of the merged index file written beside `lists`, which names it by base name."""
    index = faiss.read_index(trained)
    merge_ondisk(index, parts, lists)
    invlists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists)
    invlists.filename = os.path.basename(lists)
    out = lists + ".index"
    faiss.write_index(index, out)
    return out


def build_on_disk(
    executor: Executor, trained: faiss.Index, shards: Iterator[Shard], lists: Path, where: Path
) -> faiss.Index:
    """`trained` (empty) with every shard added on the executor and the inverted lists
    merged on disk into the file `lists`, the merge itself run on the executor too: the
    driver holds the quantizer and maps the lists read-only, never loads them."""
    if trained.ntotal:
        raise ValueError(
            f"index: an on-disk build starts from an empty trained index, "
            f"this one holds {trained.ntotal} vectors"
        )
    with scratch_dir(where) as tmp:
        path = str(tmp / "trained.index")
        faiss.write_index(trained, path)
        parts = list(map_ordered(executor, fill_shard, enumerate(shards), path, str(tmp)))
        merged = next(map_ordered(executor, merge_shards, [parts], path, str(lists)))
    index = faiss.read_index(merged, faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY)
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
