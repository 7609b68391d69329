"""Training and filling FAISS indexes: a bounded seeded training sample, rows added in
batches, in place or on a Dask cluster (IVF shards merged in order) or on disk."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq

from tasks.core.catalog import INDEX_IVFDATA
from tasks.core.config import IndexConfig, RunConfig
from tasks.core.shards import Executor, map_ordered, open_executor
from tasks.core.vectors import sample_rows
from tasks.indexing.factory import new_index
from tasks.indexing.ondisk import (
    ONDISK_SHARD_ROWS,
    Shard,
    array_shards,
    build_on_disk,
    file_shards,
    put_shards,
    wants_on_disk,
)
from tasks.storage.scratch import SharedScratch, open_scratch

_ADD_BATCH = 65_536


def train_index(x: np.ndarray, factory: str, cfg: IndexConfig) -> faiss.Index:
    """An empty `factory` index, trained (if it needs it) on a seeded sample of `x` of at
    most `train_sample` rows."""
    x = np.ascontiguousarray(x, dtype="float32")
    n, d = x.shape
    index = new_index(d, factory)
    if not index.is_trained:
        xt = x[sample_rows(n, cfg.train_sample, cfg.seed)]
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None and _gpus() > 0:  # faiss-gpu: k-means assignment on the GPU(s)
            ivf.clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatL2(d))
        index.train(xt)
        if ivf is not None:
            ivf.clustering_index = None  # keep the saved index CPU-only
    return index


def _gpus() -> int:
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def fill_index(index: faiss.Index, x: np.ndarray, ids: np.ndarray | None = None
               ) -> faiss.Index:
    """Add every row of `x` under `ids` (row numbers when None) to a trained index.

    Indexes without ids of their own (Flat, HNSW) are wrapped in IndexIDMap2.
    """
    ids = np.arange(len(x), dtype="int64") if ids is None else ids
    if faiss.try_extract_index_ivf(index) is None:
        index = faiss.IndexIDMap2(index)
    add_vectors(index, x, ids)
    return index


Fill = Callable[[faiss.Index, np.ndarray, np.ndarray | None], faiss.Index]


def build_index(x: np.ndarray, factory: str, cfg: IndexConfig,
                ids: np.ndarray | None = None, fill: Fill = fill_index) -> faiss.Index:
    """Train on a bounded sample of `x`, then add every row (with `ids`) in batches."""
    return fill(train_index(x, factory, cfg), x, ids)


def add_shard(shard: tuple[np.ndarray, np.ndarray], trained: np.ndarray) -> np.ndarray:
    """On a worker: the serialized trained index with one shard's rows added."""
    index = faiss.deserialize_index(trained)
    add_vectors(index, *shard)
    return faiss.serialize_index(index)


def fill_on_cluster(executor: Executor, trained: faiss.Index, x: np.ndarray,
                    ids: np.ndarray) -> faiss.Index:
    """Add shards of `x` in parallel into copies of the trained IVF index (one trained
    quantizer, broadcast once), then merge them in shard order: the inverted lists hold the
    same entries in the same order as one process adding every row."""
    blob = executor.client.scatter(faiss.serialize_index(trained), broadcast=True)
    rows = executor.shard_rows
    shards = ((x[s:s + rows], ids[s:s + rows]) for s in range(0, len(x), rows))
    merged = trained
    for part in map_ordered(executor, add_shard, shards, blob):
        index = faiss.deserialize_index(part)
        if merged is trained:
            merged = index
        else:
            merged.merge_from(index, 0)
    return merged


def fill_for(run_cfg: RunConfig, cfg: IndexConfig | None = None, out_dir: Path | None = None,
             source: Path | None = None) -> Fill:
    """How a trained index is filled: IVF lists on disk (built beside `out_dir`) when
    `index.on_disk` says so (`tasks.indexing.ondisk`); else IVF indexes on the Dask cluster
    when `run.executor` is dask (the cluster is opened only then), anything else here.
    `source`: the Parquet file whose rows are the vectors filled, in order, which workers
    may read by path instead of receiving the vectors."""
    def fill(trained: faiss.Index, x: np.ndarray, ids: np.ndarray | None) -> faiss.Index:
        ids = np.arange(len(x), dtype="int64") if ids is None else ids
        if cfg is not None and out_dir is not None and wants_on_disk(
                cfg.on_disk, trained, len(x), cfg.memory_budget_mb):
            lists = out_dir.with_name(f".{out_dir.name}.lists")
            return fill_lists_on_disk(run_cfg, trained, (x, ids, source), lists)
        if run_cfg.executor != "dask" or not isinstance(faiss.downcast_index(trained),
                                                          faiss.IndexIVF):
            return fill_index(trained, x, ids)
        with open_executor(run_cfg) as executor:
            return fill_on_cluster(executor, trained, x, ids)

    return fill


def ondisk_shards(executor: Executor, store: SharedScratch,
                  rows: tuple[np.ndarray, np.ndarray, Path | None]) -> Iterator[Shard]:
    """What the workers fill from: arrays in this process; on Dask the row groups of the
    `source` file read in place by path when the scratch is a folder they share, or the
    vectors put in the S3 scratch shard by shard (they are in this process already)."""
    x, ids, source = rows
    if executor.client is None:
        return array_shards(x, ids, ONDISK_SHARD_ROWS)
    if store.on_s3 or source is None or pq.read_metadata(source).num_rows != len(x):
        return put_shards(store, x, ids, ONDISK_SHARD_ROWS)
    return file_shards(source, ids, ONDISK_SHARD_ROWS)


def fill_lists_on_disk(run_cfg: RunConfig, trained: faiss.Index,
                       rows: tuple[np.ndarray, np.ndarray, Path | None], lists: Path
                       ) -> faiss.Index:
    """Shards (`rows`: vectors, ids, their file) added on the executor, lists merged into
    `lists/index.ivfdata` (moved into the index folder when it is written)."""
    shutil.rmtree(lists, ignore_errors=True)  # a killed run's (the workspace is locked)
    lists.mkdir(parents=True)
    with (open_executor(run_cfg) as executor,
          open_scratch(executor, run_cfg.dask, lists.parent, "index") as store):
        return build_on_disk(executor, trained, ondisk_shards(executor, store, rows),
                             lists / INDEX_IVFDATA.name, store)


def add_vectors(index: faiss.Index, x: np.ndarray, ids: np.ndarray) -> None:
    """add_with_ids in batches (bounded temporary memory)."""
    for start in range(0, len(x), _ADD_BATCH):
        index.add_with_ids(np.ascontiguousarray(x[start:start + _ADD_BATCH], dtype="float32"),
                           np.ascontiguousarray(ids[start:start + _ADD_BATCH], dtype="int64"))


def update_index(index: faiss.Index, x_add: np.ndarray, ids_add: np.ndarray,
                 ids_remove: np.ndarray) -> faiss.Index:
    """Remove `ids_remove`, then add `x_add` under `ids_add`, keeping the trained quantizer."""
    if len(ids_remove):
        index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids_remove, "int64")))
    add_vectors(index, x_add, ids_add)
    return index
