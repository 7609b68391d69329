"""dedup: reduced vectors + chunk texts -> kept `vectors.parquet` + audit `dropped.parquet`.

Schema out: chunk_id, doc_id, source, title, text, context, vector; dropped: dropped_chunk_id,
kept_chunk_id, similarity, kind ('exact' | 'near'), doc_id, source, group_chunk_id, text,
context.
Invariant: every input chunk is kept or dropped with the kept chunk standing for its group
(which the index carries, so search still reaches it). Of a duplicate group the chunk with
the shortest source path is kept, then the lexicographically first, then the first in corpus
order (`keep_order`); the choice only moves when that member changes or goes. Rows stay in
corpus order. Memory is O(n*d), never O(n^2); on Dask (`tasks.duplicates.sharded`) the
driver holds O(n) row numbers and digests, the workers compare cells, same output bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.core.catalog import CHUNKS, DROPPED, KEPT, REDUCED, VECTOR_COLUMN
from tasks.core.config import DedupConfig, RunConfig
from tasks.core.io import StageOutput, open_parquet, read_with_vectors
from tasks.core.progress import task_logger
from tasks.core.runtime import StageRun, main, stage_task, start_stage
from tasks.core.shards import Executor, map_ordered, open_executor, shard_rows
from tasks.duplicates.pairs import (
    first_of_keys,
    flat_pairs,
    near_duplicate_pairs,
    shard_digests,
    text_digests,
)
from tasks.duplicates.sharded import (
    digests_by_path,
    near_order_scratch,
    scratch_vectors,
    sharded_ivf_pairs,
)
from tasks.storage.scratch import open_scratch


def choose_kept(n: int, i: np.ndarray, j: np.ndarray, sim: np.ndarray
                ) -> tuple[np.ndarray, list[tuple[int, int, float]]]:
    """Walk rows in order; a kept row drops its later neighbours. Returns (keep mask, drops)."""
    order = np.lexsort((j, i))
    i, j, sim = i[order], j[order], sim[order]
    starts = np.searchsorted(i, np.arange(n + 1))
    keep = np.ones(n, dtype=bool)
    drops: list[tuple[int, int, float]] = []
    for row in np.unique(i).tolist():  # rows without neighbours change nothing
        if not keep[row]:
            continue
        for k in range(starts[row], starts[row + 1]):
            if keep[j[k]]:
                keep[j[k]] = False
                drops.append((int(j[k]), row, float(sim[k])))
    return keep, drops


Drops = list[tuple[int, int, float, str]]
NearPairs = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def dedup_rows(n: int, keys: np.ndarray | None, near_pairs: NearPairs, cfg: DedupConfig
               ) -> tuple[np.ndarray, Drops]:
    """Keep mask over `n` rows and the (dropped, kept, similarity, kind) audit list.

    `keys` are the rows' text digests (None: no exact pass); `near_pairs(rows)` gives the
    (i, j, similarity) pairs among the rows still kept (`rows`, ascending) as positions in
    `rows`: in this process or on the cluster, the decisions are taken here, in row order.
    """
    keep = np.ones(n, dtype=bool)
    drops: Drops = []
    if cfg.exact and keys is not None:
        first = first_of_keys(keys)
        for row in np.flatnonzero(first != np.arange(n)):
            keep[row] = False
            drops.append((int(row), int(first[row]), 1.0, "exact"))
    if cfg.near and keep.sum() > 1:
        rows = np.flatnonzero(keep)
        i, j, sim = near_pairs(rows)
        sub_keep, near = choose_kept(len(rows), i, j, sim)
        keep[rows[~sub_keep]] = False
        drops += [(int(rows[a]), int(rows[b]), s, "near") for a, b, s in near]
    return keep, drops


def dedup_vectors(x: np.ndarray, texts: list[str], cfg: DedupConfig
                  ) -> tuple[np.ndarray, Drops]:
    """Keep mask over rows and the (dropped, kept, similarity, kind) audit list."""
    return dedup_rows(len(x), text_digests(texts) if cfg.exact else None,
                      lambda rows: near_duplicate_pairs(x if len(rows) == len(x) else x[rows],
                                                        cfg), cfg)


def keep_order(sources: list[str] | pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Rows in the order they claim to be kept: shortest source path first (an original
    before its `-copy`, `-v2` or `/archive/` twin), then lexicographic, then corpus order
    (records in file order, chunks in text order). Sorted by Arrow: code points counted,
    UTF-8 bytes compared (the order of code points), a few bytes a row at 10M rows."""
    src = pa.array(sources, pa.string()) if isinstance(sources, list) else sources
    table = pa.table({"len": pc.utf8_length(src), "source": src,
                      "row": pa.array(np.arange(len(src), dtype="int64"))})
    keys = [("len", "ascending"), ("source", "ascending"), ("row", "ascending")]
    return pc.sort_indices(table, sort_keys=keys).to_numpy().astype("int64")


def to_rows(order: np.ndarray, keep: np.ndarray, drops: Drops) -> tuple[np.ndarray, Drops]:
    """A keep mask and audit over rows taken in `order`, back in the input's row numbers."""
    out = np.zeros(len(order), dtype=bool)
    out[order] = keep
    return out, [(int(order[a]), int(order[b]), s, k) for a, b, s, k in drops]


def group_of(drops: Drops) -> dict[int, int]:
    """Dropped row -> the kept row standing for its duplicate group.

    A row dropped as an exact copy of a row that the near pass drops in turn belongs to the
    group of the row that survived: twins are followed until a kept row.
    """
    twin = {a: b for a, b, _, _ in drops}
    out = {}
    for row, first in twin.items():
        head = first
        while head in twin:
            head = twin[head]
        out[row] = head
    return out


def kept_batch(chunks: pa.Table, vectors: pa.Table, keep: np.ndarray) -> pa.Table:
    """One batch of kept rows: the chunk columns and the vector, as stored (no float copy)."""
    mask = pa.array(keep)
    kept = chunks.select([c for c in KEPT.columns if c != VECTOR_COLUMN]).filter(mask)
    return kept.append_column(VECTOR_COLUMN, vectors.column(VECTOR_COLUMN).filter(mask))


def dropped_table(ids: pa.ChunkedArray, dropped_rows: pa.Table, drops: Drops) -> pa.Table:
    """The audit table in dropped-row order; `dropped_rows` are the chunk rows of
    `sorted(drops)` (doc_id, source, text, context), `ids` every row's chunk_id."""
    audit, group = sorted(drops), group_of(drops)
    return pa.table({
        "dropped_chunk_id": ids.take(pa.array([a for a, _, _, _ in audit], pa.int64())),
        "kept_chunk_id": ids.take(pa.array([b for _, b, _, _ in audit], pa.int64())),
        "similarity": pa.array([s for _, _, s, _ in audit], pa.float32()),
        "kind": pa.array([k for _, _, _, k in audit], pa.string()),
        **{c: dropped_rows.column(c) for c in ("doc_id", "source")},
        "group_chunk_id": ids.take(pa.array([group[a] for a, _, _, _ in audit], pa.int64())),
        **{c: dropped_rows.column(c) for c in ("text", "context")}},
        schema=DROPPED.schema()).combine_chunks()


def dedup_counts(keep: np.ndarray, drops: Drops) -> dict[str, int]:
    """Rows in, kept, and dropped by kind."""
    return {"in": len(keep), "kept": int(keep.sum()),
            "exact": sum(d[3] == "exact" for d in drops),
            "near": sum(d[3] == "near" for d in drops)}


def aligned(chunks: Iterator[pa.Table], vectors: Iterator[pa.Table]
            ) -> Iterator[tuple[pa.Table, pa.Table]]:
    """Batches of two files of the same rows, cut to the same row ranges (each file is read
    in batches of its own width)."""
    buffer: pa.Table | None = None
    for batch in chunks:
        parts = [] if buffer is None or not buffer.num_rows else [buffer]
        have = sum(p.num_rows for p in parts)
        while have < batch.num_rows:
            part = next(vectors)
            parts.append(part)
            have += part.num_rows
        joined = pa.concat_tables(parts)
        yield batch, joined.slice(0, batch.num_rows)
        buffer = joined.slice(batch.num_rows)


def near_pairs_in_process(run: StageRun, order: np.ndarray, cfg: DedupConfig) -> NearPairs:
    """Near pairs with every vector in this process's memory (`run.executor: local`)."""
    def near(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        run.input_path(REDUCED)  # its checksum
        x = read_with_vectors(run.input_dirs["reduce"], REDUCED, run.inputs["reduce"],
                              VECTOR_COLUMN, columns=[])[1]
        x = x[order[rows]]  # the file's matrix is let go before the search
        return near_duplicate_pairs(x, cfg)

    return near


def near_pairs_sharded(executor: Executor, path: Path, order: np.ndarray, cfg: DedupConfig,
                       run_cfg: RunConfig, where: Path) -> NearPairs:
    """Near pairs found by cell on the workers (`tasks.duplicates.sharded`), who read the
    vector file at `path` by row groups (in place, or uploaded once to the S3 scratch
    `run.dask.scratch`): the driver holds row numbers, never the vectors."""
    def near(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with open_scratch(executor, run_cfg.dask, where, "dedup") as store:
            scratch, xt = near_order_scratch(executor, path, order[rows], len(order),
                                             cfg.seed, store)
            if scratch.m < cfg.exact_search_below:  # small: exact search here, as locally
                return flat_pairs(np.array(scratch_vectors(scratch)), cfg.threshold)
            return sharded_ivf_pairs(executor, scratch, xt, cfg.nprobe, cfg.threshold,
                                     cfg.seed)

    return near


def text_keys(run: StageRun, executor: Executor) -> np.ndarray:
    """Text digests of every chunk, in file order: on Dask with the scratch in a folder
    (`paths.data`, which the workers see), read by path on the workers; else the texts go
    to the executor in shards (to S3 they would be uploaded whole all the same)."""
    rows = shard_rows(run.params.run)
    if executor.client is not None and run.params.run.dask.scratch is None:
        return digests_by_path(executor, run.input_path(CHUNKS), rows or 1)
    shards = run.batches(CHUNKS, ["text"], rows)
    return np.concatenate([np.zeros(0, "S32"), *map_ordered(executor, shard_digests, shards)])


def decide(run: StageRun, executor: Executor, order: np.ndarray, cfg: DedupConfig
           ) -> tuple[np.ndarray, Drops]:
    """Keep mask and audit in the input's row numbers, rows taken in `order`; text digests
    and (on Dask) the near pass run on the executor."""
    keys = None if not cfg.exact else text_keys(run, executor)[order]
    near = (near_pairs_in_process(run, order, cfg) if executor.client is None else
            near_pairs_sharded(executor, run.input_path(REDUCED), order, cfg,
                               run.params.run, run.out_dir.parent))
    return to_rows(order, *dedup_rows(len(order), keys, near, cfg))


def write_outputs(out: StageOutput, run: StageRun, keep: np.ndarray, drops: Drops,
                  ids: pa.ChunkedArray) -> None:
    """Stream the kept rows and collect the dropped ones, batch by batch, in row order."""
    writer = out.open_table(KEPT, KEPT.schema(_dimension(run)))
    dropped = np.array(sorted(a for a, _, _, _ in drops), dtype="int64")
    parts, start = [], 0
    batches = aligned(run.batches(CHUNKS, list(KEPT.columns[:-1])),
                      run.batches(REDUCED, [VECTOR_COLUMN]))
    for chunks, vectors in batches:
        stop = start + chunks.num_rows
        writer.write(kept_batch(chunks, vectors, keep[start:stop]))
        here = dropped[np.searchsorted(dropped, start):np.searchsorted(dropped, stop)]
        parts.append(chunks.select(["doc_id", "source", "text", "context"]).take(here - start))
        start = stop
    rows = pa.concat_tables(parts) if parts else pa.table(
        {c: pa.array([], pa.string()) for c in ("doc_id", "source", "text", "context")})
    out.write_table(DROPPED, dropped_table(ids, rows, drops))


def _dimension(run: StageRun) -> int:
    with open_parquet(run.input_dirs["reduce"], REDUCED, run.inputs["reduce"]) as pf:
        return pf.schema_arrow.field(VECTOR_COLUMN).type.list_size


@stage_task("dedup")
def dedup_task(root: str = ".") -> str:
    """Drop exact and near-duplicate chunks; write the kept rows and the audit table."""
    run = start_stage("dedup", root)
    cfg = run.params.dedup
    meta = run.read(CHUNKS, ["chunk_id", "source"])
    if run.read(REDUCED, ["chunk_id"]).column("chunk_id") != meta.column("chunk_id"):
        raise ValueError("dedup: reduce vectors and chunk rows are not the same chunk_ids")
    with open_executor(run.params.run) as executor:
        keep, drops = decide(run, executor, keep_order(meta.column("source")), cfg)
    counts = dedup_counts(keep, drops)
    fp = run.fingerprint()
    with run.output(fp, cfg) as out:
        write_outputs(out, run, keep, drops, meta.column("chunk_id"))
        out.record(model=run.inputs["reduce"]["model"], space=run.inputs["reduce"]["space"],
                   rows=counts, unit_vectors=run.inputs["reduce"].get("unit_vectors", False))
    task_logger().info("dedup: %d chunks -> %d kept (%d exact, %d near dropped) in %.1f s",
                       counts["in"], counts["kept"], counts["exact"], counts["near"],
                       run.seconds)
    return str(run.out_dir)


if __name__ == "__main__":
    main(dedup_task)
