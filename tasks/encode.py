"""encode: `chunks.parquet` -> `vectors.parquet` (chunk_id, vector `fixed_size_list<float32>[d]`).

Invariant: one vector per chunk, in chunk order, from exactly the model the manifest names;
identical chunk texts are encoded once.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tasks.core.catalog import CHUNKS, ENCODED, VECTOR_COLUMN
from tasks.core.config import EncodeConfig
from tasks.core.io import StageOutput
from tasks.core.progress import Progress, task_logger
from tasks.core.runtime import StageRun, main, shard_observer, stage_task, start_stage
from tasks.core.shards import Executor, Observer, map_ordered, open_executor
from tasks.core.vectors import vector_problem, vectors_to_arrow
from tasks.documents.context import contextual_texts
from tasks.encoders import vector_cache
from tasks.encoders.device import runtime_for
from tasks.encoders.loading import encoder_for, release_local_encoders
from tasks.encoders.model import prefixes
from tasks.encoders.tuned import chosen_space
from tasks.encoders.vector_cache import text_keys
from tasks.evaluation.ahead import embed_ahead

# Batches per block, the unit an encoder is called with, in one process or as a Dask shard's
# part (`plan_blocks`). 32 was no faster than 8 with OpenVINO (`python -m
# benchmarks.encode_backends`: 27.6k vs 28.4k tokens/s), and small blocks give a Dask cluster
# more shards of a small input.
BLOCK_BATCHES = 8
# Batches per window of the streamed input: 256 x 32 = 8192 chunks by default (~12 MiB of
# 384-d vectors); texts are length-sorted within a window, not across the whole input.
WINDOW_BATCHES = 256
COUNTS = ("chunks", "unique_texts", "encoded", "reused")


def block_rows(cfg: EncodeConfig) -> int:
    """Texts per block: `BLOCK_BATCHES` batches."""
    return max(cfg.batch_size * BLOCK_BATCHES, cfg.batch_size)


def plan_blocks(texts: list[str], cfg: EncodeConfig) -> tuple[list[str], np.ndarray,
                                                                list[np.ndarray]]:
    """(unique texts, inverse, blocks): identical texts once, sorted by length once for the
    whole input, cut into blocks of `block_rows` (rows of `unique`).

    A block is the unit an encoder is called with, in one process or on a Dask worker, so a
    batching backend forms the same batches, and gives the same vectors, either way."""
    unique, inverse = np.unique(np.array(texts, dtype=object), return_inverse=True)
    order = np.argsort([-len(t) for t in unique.tolist()], kind="stable")
    block = block_rows(cfg)
    return (unique.tolist(), inverse.reshape(-1),
            [order[i:i + block] for i in range(0, len(order), block)])


def encode_blocks(model: Any, blocks: list[list[str]], cfg: EncodeConfig, prefix: str
                  ) -> np.ndarray:
    """(n, d) float32 vectors of `prefix + text`, one `model.encode` call per block."""
    return np.concatenate([
        model.encode([prefix + t for t in texts], batch_size=cfg.batch_size,
                     normalize_embeddings=cfg.normalize, convert_to_numpy=True,
                     show_progress_bar=False)  # the stage's own bar counts
        for texts in blocks])


Groups = Iterator[list[list[str]]]  # groups of blocks of texts


def encode_planned(texts: list[str], cfg: EncodeConfig, d: int,
                   encode: Callable[[Groups], Iterable[np.ndarray]],
                   blocks_per_group: Callable[[int], int] = lambda n_blocks: 1,
                   on_block: Callable[[int, int], None] | None = None) -> np.ndarray:
    """(n, d) vectors of `texts` in input order: the blocks of `plan_blocks`, in groups of
    `blocks_per_group(number of blocks)`, go to `encode`, which yields each group's vectors
    in order; `on_block(done, total)` is called after each group."""
    unique, inverse, blocks = plan_blocks(texts, cfg)
    per_group = blocks_per_group(len(blocks))
    groups = [blocks[i:i + per_group] for i in range(0, len(blocks), per_group)]
    xu = np.zeros((len(unique), d), dtype="float32")
    done = 0
    results = encode([[unique[i] for i in rows] for rows in group] for group in groups)
    for group, x in zip(groups, results, strict=True):
        rows = np.concatenate(group)
        xu[rows] = x
        done += len(rows)
        if on_block is not None:
            on_block(done, len(unique))
    return np.ascontiguousarray(xu[inverse])


def encode_texts(model: Any, texts: list[str], cfg: EncodeConfig, prefix: str,
                 on_block: Callable[[int, int], None] | None = None) -> np.ndarray:
    """(n, d) float32 embeddings of `prefix + text`, in input order, block by block
    (`plan_blocks`) in this process; `on_block(done, total)` is called after each block."""
    return encode_planned(texts, cfg, model.get_embedding_dimension(),
                          lambda groups: (encode_blocks(model, g, cfg, prefix) for g in groups),
                          on_block=on_block)


def vectors_table(chunk_ids: pa.Array | pa.ChunkedArray, x: np.ndarray,
                  keys: list[str] | None = None) -> pa.Table:
    """The encode output table: chunk_id (+ cache key) + fixed-size-list vector column."""
    cols: dict[str, Any] = {"chunk_id": chunk_ids}
    if keys is not None:
        cols["text_key"] = pa.array(keys, pa.string())
    cols[VECTOR_COLUMN] = vectors_to_arrow(x)
    return pa.table(cols)


Encoder = Callable[[list[str], Callable[[int, int], None] | None], np.ndarray]


def encode_with_cache(encode: Encoder, d: int, texts: list[str], cfg: EncodeConfig,
                      cache: Path | None, space: str,
                      on_block: Callable[[int, int], None] | None = None,
                      seen: set[str] | None = None
                      ) -> tuple[np.ndarray, list[str], dict[str, int]]:
    """Vectors for `texts`, encoding only what the cache lacks; (x, keys, counts).

    Args:
        encode: `encode(texts, on_block)` -> their (n, d) vectors (`local_encoder`,
            `dask_encoder`).
        seen: keys an earlier window of the same run already counted (and put in `cache`);
            updated in place. Counts cover only keys new to the run, so per-window counts
            add up to those of one call over all the texts.
    """
    keys = text_keys(texts, prefixes(cfg)[0])
    seen = set() if seen is None else seen
    unique = sorted(set(keys))
    found, xu = (vector_cache.lookup(cache, space, unique, d) if cache is not None
                 else (np.zeros(len(unique), bool), np.zeros((len(unique), d), "float32")))
    text_of = dict(zip(keys, texts, strict=True))
    missing = [k for k, hit in zip(unique, found, strict=True) if not hit]
    if missing:
        xm = encode([text_of[k] for k in missing], on_block)
        problem = vector_problem(xm, cfg.normalize)
        if problem:  # never into the cache or the output
            raise ValueError(f"encode: the encoder ({cfg.model}) returned unusable vectors: "
                             f"{problem} of the {len(missing)} texts it was given")
        xu[~found] = xm
        if cache is not None:
            vector_cache.append(cache, space, missing, xm)
    row = {k: i for i, k in enumerate(unique)}
    x = np.ascontiguousarray(xu[[row[k] for k in keys]]) if keys else np.zeros((0, d), "float32")
    new = [k not in seen for k in unique]
    counts = {"chunks": len(texts), "unique_texts": sum(new),
              "encoded": sum(n for n, hit in zip(new, found, strict=True) if not hit),
              "reused": sum(n for n, hit in zip(new, found, strict=True) if hit)}
    seen.update(unique)
    return x, keys, counts


def window_rows(cfg: EncodeConfig) -> int:
    """Chunks read, looked up and encoded together: `WINDOW_BATCHES` batches, so that
    length-sorting inside a window still gives batches of similar lengths."""
    return cfg.batch_size * WINDOW_BATCHES


def _window_progress(report: Callable[[int, int], None] | None, done: int, rows: int,
                     total: int) -> Callable[[int, int], None] | None:
    """Map a window's own (done, total) onto chunks of the whole input."""
    if report is None:
        return None
    return lambda d, t: report(done + rows * d // max(t, 1), total)


def local_encoder(cfg: EncodeConfig) -> Encoder:
    """Encode in this process with the encoder `cfg` describes (loaded once per process, on
    the first text the vector cache lacks: a rerun served from the cache loads none)."""
    prefix = prefixes(cfg)[0]
    return lambda texts, on_block: encode_texts(encoder_for(cfg), texts, cfg, prefix,
                                                on_block)


def encode_shard(blocks: list[list[str]], cfg: EncodeConfig) -> np.ndarray:
    """One shard's vectors, on a Dask worker: its blocks encoded as one process would encode
    them (the encoder is loaded once per process)."""
    return encode_blocks(encoder_for(cfg), blocks, cfg, prefixes(cfg)[0])


def dask_encoder(executor: Executor, cfg: EncodeConfig, d: int,
                 observe: Observer | None = None) -> Encoder:
    """Encode shards of whole blocks (`plan_blocks`, `run.dask.shard_rows` texts rounded up
    to a block) on the cluster, reassembled in order: the same batches, so the same
    vectors, as in one process."""
    def per_shard(n_blocks: int) -> int:
        # at most shard_rows texts a shard (whole blocks), and enough shards for every slot
        return max(1, min(executor.shard_rows // block_rows(cfg),
                          -(-n_blocks // executor.in_flight)))

    return lambda texts, on_block: encode_planned(
        texts, cfg, d, lambda shards: map_ordered(executor, encode_shard, shards, cfg,
                                                  observe=observe),
        per_shard, on_block)


def encode_windows(encode: Encoder, d: int, windows: Iterable[pa.Table], cfg: EncodeConfig,
                   cache: Path, space: str, total: int,
                   report: Callable[[int, int], None] | None = None
                   ) -> Iterator[tuple[pa.Table, dict[str, int]]]:
    """The vectors table and counts of each window of chunks (chunk_id, text, context), in
    order; each chunk encoded with its context (`with_context`).

    A text repeated in a later window is looked up in `cache`, not encoded again.
    """
    seen: set[str] = set()
    done = 0
    for chunks in windows:
        on_block = _window_progress(report, done, chunks.num_rows, total)
        x, keys, counts = encode_with_cache(encode, d, contextual_texts(chunks), cfg, cache,
                                            space, on_block=on_block, seen=seen)
        done += chunks.num_rows
        if report is not None:  # windows served from the cache encode no block
            report(done, total)
        yield vectors_table(chunks.column("chunk_id"), x, keys), counts


def vector_store(shared: Path, out: StageOutput, cfg: EncodeConfig, space: str, d: int
                 ) -> Path:
    """The vector cache: the shared one, its shards of `space` checked first (a shard that
    fails its checksum or holds a bad vector is named in the log, recorded and dropped, so
    its texts are encoded again), or (`encode.cache: false`) a run-local one inside the
    output being written, so a text repeated in a later window is looked up rather than
    encoded again, and vectors never pile up in memory."""
    if not cfg.cache:
        return out.path(".run-vectors")
    vector_cache.remove_leftovers(shared)
    dropped = vector_cache.verify(shared, space, d, cfg.normalize)
    out.record(cache_dropped={p.name: why for p, why in dropped})
    return shared


def finish_cache(run: StageRun, cfg: EncodeConfig, cache: Path, space: str, d: int) -> int:
    """The shared vector cache gets the texts the later stages embed (`embed_ahead`: how
    many); a run-local one (`encode.cache` false) is removed."""
    if cfg.cache:
        return embed_ahead(run, cfg, cache, space, d)
    shutil.rmtree(cache, ignore_errors=True)
    return 0


@stage_task("encode")
def encode_task(root: str = ".") -> str:
    """Embed every chunk with the configured encoder, window by window (`window_rows`)."""
    run = start_stage("encode", root)
    cfg, model_info, _ = chosen_space(run.params.encode, run.input_dirs["finetune"])
    d, space = model_info["dim"], model_info["fingerprint"]
    fp = run.fingerprint(model=model_info)
    counts = dict.fromkeys(COUNTS, 0)
    with open_executor(run.params.run) as ex, run.output(fp, run.params.encode) as out:
        encode = (local_encoder(cfg) if ex.client is None
                  else dask_encoder(ex, cfg, d, shard_observer("encode")))
        cache = vector_store(run.root / run.params.paths.vector_cache, out, cfg, space, d)
        writer = out.open_table(ENCODED, ENCODED.schema(d))
        windows = run.batches(CHUNKS, ["chunk_id", "text", "context"],
                              batch_rows=window_rows(cfg))
        with Progress("encode", run.count(CHUNKS), "chunks") as bar:
            for table, window in encode_windows(encode, d, windows, cfg, cache, space,
                                                bar.total, bar.reach):
                writer.write(table)
                counts = {k: counts[k] + window[k] for k in COUNTS}
        ahead = finish_cache(run, cfg, cache, space, d)
        out.record(model=model_info, device=runtime_for(cfg).device, space=space, rows=counts,
                   dim=d, executor=run.params.run.executor, unit_vectors=cfg.normalize)
        release_local_encoders()  # later stages embed only short queries (and load it again)
    task_logger().info("encode: %d chunks, %d encoded, %d reused from cache, %d query-side "
                       "texts embedded ahead in %.1f s", counts["chunks"], counts["encoded"],
                       counts["reused"], ahead, run.seconds)
    return str(run.out_dir)


if __name__ == "__main__":
    main(encode_task)
