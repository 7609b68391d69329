"""reduce: encode's `vectors.parquet` -> `vectors.parquet` in the reduced space + `transform.npz`.

Invariant: row order and chunk_ids unchanged; the saved transform maps any model vector
(queries included) into exactly this space.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from tasks.core.catalog import ENCODED, REDUCED, TRANSFORM, VECTOR_COLUMN
from tasks.core.config import ReduceConfig
from tasks.core.fingerprint import sha256_text
from tasks.core.progress import task_logger
from tasks.core.runtime import main, stage_task, start_stage
from tasks.core.vectors import vectors_to_arrow
from tasks.query.transform import VectorTransform, fit_transform

# Rows L2-normalised at a time: the squares and the quotient are a block's size, not the
# matrix's (a row's length depends on that row only, so the bytes are the same).
APPLY_ROWS = 8192


def reduce_vectors(x: np.ndarray, cfg: ReduceConfig) -> tuple[np.ndarray, VectorTransform]:
    """Fit the transform on a bounded sample, then apply it to all of `x`."""
    transform = fit_transform(x, cfg)
    if transform.components is not None:  # BLAS splits a product by its row count: whole
        return transform.apply(x), transform
    y = np.empty((len(x), transform.d_out), dtype="float32")
    for start in range(0, len(x), APPLY_ROWS):
        y[start:start + APPLY_ROWS] = transform.apply(x[start:start + APPLY_ROWS])
    return y, transform


def reduce_facts(upstream: dict[str, Any], transform: VectorTransform, n: int
                 ) -> dict[str, Any]:
    """The manifest's account: the space (the model, then exactly this transform: equal
    spaces let an index built earlier take these vectors without retraining) and sizes."""
    evr = transform.explained_variance_ratio
    return {"model": upstream["model"],
            "space": sha256_text(f"{upstream['space']}:{transform.digest()}"),
            "dim_in": transform.d_in, "dim": transform.d_out,
            "explained_variance": None if evr is None else round(float(evr.sum()), 6),
            "rows": {"vectors": n}}


@stage_task("reduce")
def reduce_task(root: str = ".") -> str:
    """PCA / whitening / L2 over the encoded vectors."""
    run = start_stage("reduce", root)
    cfg = run.params.reduce
    table, x = run.read_vectors(ENCODED, ["chunk_id"])
    y, transform = reduce_vectors(x, cfg)
    fp = run.fingerprint()
    with run.output(fp, cfg) as out:
        # row groups of `APPLY_ROWS`, as encode writes its windows: a reader (dedup)
        # decodes one at a time (one 65,536-row group cost dedup 450 MB to read at 59k rows)
        writer = out.open_table(REDUCED, REDUCED.schema(y.shape[1]))
        reduced = pa.table({"chunk_id": table.column("chunk_id"),
                            VECTOR_COLUMN: vectors_to_arrow(y)})
        for start in range(0, len(y), APPLY_ROWS):
            writer.write(reduced.slice(start, APPLY_ROWS))
        transform.save(out.path(TRANSFORM))
        out.record(**reduce_facts(run.inputs["encode"], transform, len(y)),
                   unit_vectors=cfg.l2_normalize or (cfg.pca_dims is None and bool(
                       run.inputs["encode"].get("unit_vectors"))))
    task_logger().info("reduce: %d x %d -> %d x %d in %.1f s", *x.shape, *y.shape,
                       run.seconds)
    return str(run.out_dir)


if __name__ == "__main__":
    main(reduce_task)
