"""reduce: encode's `vectors.parquet` -> `vectors.parquet` in the reduced space + `transform.npz`.

Invariant: row order and chunk_ids unchanged; the saved transform maps any model vector
(queries included) into exactly this space.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.config import ReduceConfig
from tasks.fingerprint import sha256_text, stage_fingerprint
from tasks.io import VECTOR_COLUMN, StageOutput, arrow_to_vectors, read_table, vectors_to_arrow
from tasks.runtime import main, start_stage, task_logger
from tasks.transform import TRANSFORM_FILE, VectorTransform, fit_transform


def reduce_vectors(x: np.ndarray, cfg: ReduceConfig) -> tuple[np.ndarray, VectorTransform]:
    """Fit the transform on a bounded sample, then apply it to all of `x`."""
    transform = fit_transform(x, cfg)
    return transform.apply(x), transform


@task(name="reduce", cache_policy=NO_CACHE)
def reduce_task(root: str = ".") -> str:
    """PCA / whitening / L2 over the encoded vectors."""
    run = start_stage("reduce", root)
    cfg, log = run.params.reduce, task_logger()
    upstream = run.inputs["encode"]
    table = read_table(run.input_dirs["encode"], "vectors.parquet", upstream)
    x = arrow_to_vectors(table.column(VECTOR_COLUMN))
    y, transform = reduce_vectors(x, cfg)
    fp = stage_fingerprint("reduce", cfg, run.input_fingerprints)
    # The space the vectors live in: the model, then exactly this transform. Equal spaces
    # mean an index built earlier can take these vectors without retraining.
    space = sha256_text(f"{upstream['space']}:{transform.digest()}")
    out = StageOutput(run.out_dir, "reduce", fp)
    out.write_table("vectors.parquet",
                    pa.table({"chunk_id": table.column("chunk_id"),
                              VECTOR_COLUMN: vectors_to_arrow(y)}))
    transform.save(out.path(TRANSFORM_FILE))
    evr = transform.explained_variance_ratio
    out.commit(run.manifest(
        fp, cfg, model=upstream["model"], space=space, dim_in=transform.d_in, dim=transform.d_out,
        explained_variance=None if evr is None else round(float(evr.sum()), 6),
        rows={"vectors": len(y)},
    ))
    log.info("reduce: %d x %d -> %d x %d", *x.shape, *y.shape)
    return str(run.out_dir)


if __name__ == "__main__":
    main(reduce_task)
