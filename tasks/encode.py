"""encode: `chunks.parquet` -> `vectors.parquet` (chunk_id, vector `fixed_size_list<float32>[d]`).

Invariant: one vector per chunk, in chunk order, from exactly the model the manifest names;
identical chunk texts are encoded once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks import vector_cache
from tasks.config import EncodeConfig
from tasks.fingerprint import stage_fingerprint
from tasks.io import VECTOR_COLUMN, StageOutput, read_table, vectors_to_arrow
from tasks.models import encoder_for, model_fingerprint
from tasks.runtime import main, progress_reporter, start_stage, task_logger
from tasks.vector_cache import text_keys

BLOCK_BATCHES = 64  # batches per length-sorted block: progress granularity, bounded memory


def encode_texts(model: Any, texts: list[str], cfg: EncodeConfig, prefix: str,
                 progress: bool = False,
                 on_block: Callable[[int, int], None] | None = None) -> np.ndarray:
    """(n, d) float32 embeddings of `prefix + text`, in input order.

    Identical texts are encoded once. Texts are sorted by length once for the whole input
    and encoded in blocks, so every batch pads to similar lengths; `on_block(done, total)`
    is called after each block.
    """
    unique, inverse = np.unique(np.array(texts, dtype=object), return_inverse=True)
    d = model.get_embedding_dimension()
    xu = np.zeros((len(unique), d), dtype="float32")
    order = np.argsort([-len(t) for t in unique.tolist()], kind="stable")
    block = max(cfg.batch_size * BLOCK_BATCHES, cfg.batch_size)
    for start in range(0, len(order), block):
        rows = order[start:start + block]
        xu[rows] = model.encode([prefix + unique[i] for i in rows], batch_size=cfg.batch_size,
                                normalize_embeddings=cfg.normalize, convert_to_numpy=True,
                                show_progress_bar=progress)
        if on_block is not None:
            on_block(min(start + block, len(order)), len(order))
    return np.ascontiguousarray(xu[inverse.reshape(-1)])


def vectors_table(chunk_ids: pa.Array | pa.ChunkedArray, x: np.ndarray,
                  keys: list[str] | None = None) -> pa.Table:
    """The encode output table: chunk_id (+ cache key) + fixed-size-list vector column."""
    cols: dict[str, Any] = {"chunk_id": chunk_ids}
    if keys is not None:
        cols["text_key"] = pa.array(keys, pa.string())
    cols[VECTOR_COLUMN] = vectors_to_arrow(x)
    return pa.table(cols)


def encode_with_cache(model: Any, texts: list[str], cfg: EncodeConfig, cache: Path | None,
                      space: str, on_block: Callable[[int, int], None] | None = None,
                      progress: bool = False) -> tuple[np.ndarray, list[str], dict[str, int]]:
    """Vectors for `texts`, encoding only what the cache lacks; (x, keys, counts)."""
    keys = text_keys(texts, cfg.passage_prefix)
    d = model.get_embedding_dimension()
    unique = sorted(set(keys))
    found, xu = (vector_cache.lookup(cache, space, unique, d) if cache is not None
                 else (np.zeros(len(unique), bool), np.zeros((len(unique), d), "float32")))
    text_of = dict(zip(keys, texts, strict=True))
    missing = [k for k, hit in zip(unique, found, strict=True) if not hit]
    if missing:
        xm = encode_texts(model, [text_of[k] for k in missing], cfg, cfg.passage_prefix,
                          progress=progress, on_block=on_block)
        xu[~found] = xm
        if cache is not None:
            vector_cache.append(cache, space, missing, xm)
    row = {k: i for i, k in enumerate(unique)}
    x = np.ascontiguousarray(xu[[row[k] for k in keys]]) if keys else np.zeros((0, d), "float32")
    counts = {"chunks": len(texts), "unique_texts": len(unique), "encoded": len(missing),
              "reused": int(found.sum())}
    return x, keys, counts


@task(name="encode", cache_policy=NO_CACHE)
def encode_task(root: str = ".") -> str:
    """Embed every chunk with the configured sentence-transformers model."""
    run = start_stage("encode", root)
    cfg, log = run.params.encode, task_logger()
    chunks = read_table(run.input_dirs["chunk"], "chunks.parquet", run.inputs["chunk"])
    model_info = model_fingerprint(cfg)
    model = encoder_for(cfg)
    cache = run.root / run.params.paths.vector_cache if cfg.cache else None
    x, keys, counts = encode_with_cache(
        model, chunks.column("text").to_pylist(), cfg, cache, model_info["fingerprint"],
        on_block=progress_reporter("embedpipe-encode-progress", "encode"),
        progress=sys.stderr.isatty())
    fp = stage_fingerprint("encode", cfg, run.input_fingerprints, {"model": model_info})
    out = StageOutput(run.out_dir, "encode", fp)
    out.write_table("vectors.parquet", vectors_table(chunks.column("chunk_id"), x, keys))
    out.commit(run.manifest(fp, cfg, model=model_info, device=str(model.device),
                            space=model_info["fingerprint"], rows=counts, dim=x.shape[1]))
    log.info("encode: %(chunks)d chunks, %(encoded)d encoded, %(reused)d reused from cache",
             counts)
    return str(run.out_dir)


if __name__ == "__main__":
    main(encode_task)
