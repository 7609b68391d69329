"""evaluate: index folder + deduplicated vectors -> `metrics.json` and `queries.parquet`.

Minimal here: recall@k of the index, at its tuned search parameter, against exact search,
with a seeded sample of the corpus's own vectors as queries.
"""

from __future__ import annotations

import faiss
import numpy as np
import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.config import EvaluateConfig
from tasks.fingerprint import stage_fingerprint
from tasks.io import VECTOR_COLUMN, StageOutput, arrow_to_vectors, read_table, write_json_atomic
from tasks.registry import METRICS_FILE
from tasks.runtime import main, start_stage, task_logger
from tasks.search import IndexFolder, load_index_folder


def index_recall(folder: IndexFolder, x: np.ndarray, cfg: EvaluateConfig
                 ) -> tuple[float, np.ndarray, np.ndarray]:
    """(recall@k vs exact search, query rows, per-query recall) on a seeded sample of `x`."""
    rng = np.random.default_rng(cfg.seed)
    rows = np.sort(rng.choice(len(x), size=min(len(x), cfg.sample_queries), replace=False))
    xq = np.ascontiguousarray(x[rows])
    k = min(cfg.k, len(x))
    exact = faiss.IndexFlatIP(x.shape[1])
    exact.add(np.ascontiguousarray(x, dtype="float32"))
    _, gt = exact.search(xq, k)
    _, found = folder.search_vectors(xq, k)
    per_query = np.array([len(set(f) & set(t)) / k for f, t in zip(found, gt, strict=True)])
    return round(float(per_query.mean()), 6), rows, per_query


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(root: str = ".") -> str:
    """Measure the index against exact search; write metrics.json."""
    run = start_stage("evaluate", root)
    cfg, log = run.params.evaluate, task_logger()
    folder = load_index_folder(run.input_dirs["index"])
    table = read_table(run.input_dirs["dedup"], "vectors.parquet", run.inputs["dedup"])
    x = arrow_to_vectors(table.column(VECTOR_COLUMN))
    recall, rows, per_query = index_recall(folder, x, cfg)
    metrics = {f"index_recall_at_{cfg.k}": recall, "queries": len(rows),
               "vectors": int(folder.index.ntotal), "dim": int(folder.index.d),
               "index_factory": folder.card["factory"],
               "index_size_bytes": folder.card["size_bytes"]}
    fp = stage_fingerprint("evaluate", cfg, run.input_fingerprints)
    out = StageOutput(run.out_dir, "evaluate", fp)
    out.write_table("queries.parquet", pa.table({
        "chunk_id": table.column("chunk_id").take(pa.array(rows)),
        f"recall_at_{cfg.k}": pa.array(per_query, pa.float32())}))
    out.write_json("metrics.json", metrics)
    out.commit(run.manifest(fp, cfg, metrics=metrics, rows={"queries": len(rows)}))
    write_json_atomic(run.root / METRICS_FILE, metrics)
    log.info("evaluate: recall@%d vs exact = %.4f over %d queries", cfg.k, recall, len(rows))
    return str(run.out_dir)


if __name__ == "__main__":
    main(evaluate_task)
