"""encode: `chunks.parquet` -> `vectors.parquet` (chunk_id, vector `fixed_size_list<float32>[d]`).

Invariant: one vector per chunk, in chunk order, from exactly the model the manifest names;
identical chunk texts are encoded once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.config import EncodeConfig
from tasks.fingerprint import stage_fingerprint
from tasks.io import VECTOR_COLUMN, StageOutput, read_table, vectors_to_arrow
from tasks.models import encoder_for, model_fingerprint
from tasks.runtime import main, progress_reporter, start_stage, task_logger

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


def vectors_table(chunk_ids: pa.Array | pa.ChunkedArray, x: np.ndarray) -> pa.Table:
    """The encode output table: chunk_id + fixed-size-list vector column."""
    return pa.table({"chunk_id": chunk_ids, VECTOR_COLUMN: vectors_to_arrow(x)})


@task(name="encode", cache_policy=NO_CACHE)
def encode_task(root: str = ".") -> str:
    """Embed every chunk with the configured sentence-transformers model."""
    run = start_stage("encode", root)
    cfg, log = run.params.encode, task_logger()
    chunks = read_table(run.input_dirs["chunk"], "chunks.parquet", run.inputs["chunk"])
    model_info = model_fingerprint(cfg)
    model = encoder_for(cfg)
    x = encode_texts(model, chunks.column("text").to_pylist(), cfg, cfg.passage_prefix,
                     progress=sys.stderr.isatty(),
                     on_block=progress_reporter("embedpipe-encode-progress", "encode"))
    fp = stage_fingerprint("encode", cfg, run.input_fingerprints, {"model": model_info})
    out = StageOutput(run.out_dir, "encode", fp)
    out.write_table("vectors.parquet", vectors_table(chunks.column("chunk_id"), x))
    out.commit(run.manifest(fp, cfg, model=model_info, device=str(model.device),
                            space=model_info["fingerprint"],
                            rows={"chunks": chunks.num_rows, "vectors": len(x)}, dim=x.shape[1]))
    log.info("encode: %d chunks -> %d x %d vectors on %s",
             chunks.num_rows, *x.shape, model.device)
    return str(run.out_dir)


if __name__ == "__main__":
    main(encode_task)
