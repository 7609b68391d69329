"""index: deduplicated vectors -> the index folder the query side needs, nothing else.

Folder: index.faiss, chunks.parquet (row i of the index = row i here), transform.npz,
model.json (model fingerprint, query prefix), card.json (type, nlist, nprobe, recall, size).
Invariant: inner product on unit vectors; the search parameter is the smallest meeting
`target_recall` recall@10 against exact search.
"""

from __future__ import annotations

import math
import shutil

import faiss
import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.config import IndexConfig
from tasks.fingerprint import stage_fingerprint
from tasks.io import VECTOR_COLUMN, StageOutput, arrow_to_vectors, read_table
from tasks.runtime import main, start_stage, task_logger
from tasks.search import (
    CARD_FILE,
    CHUNKS_FILE,
    INDEX_FILE,
    MODEL_FILE,
    TRANSFORM_FILE,
    recall_at_k,
    set_search_param,
)

MIN_POINTS_PER_CENTROID = 39  # below this FAISS warns that k-means is under-trained
_ADD_BATCH = 65_536


def auto_nlist(n: int) -> int:
    """~4*sqrt(n) lists (FAISS guidance: 4-16 sqrt(n)), with >= 39 training points each."""
    return max(1, min(int(round(4 * math.sqrt(n))), n // MIN_POINTS_PER_CENTROID))


def resolve_factory(cfg: IndexConfig, n: int) -> tuple[str, int | None]:
    """The concrete factory string and nlist (None for non-IVF) for `n` vectors."""
    factory = cfg.factory
    if factory == "auto":
        factory = "Flat" if n < cfg.flat_below else "IVF{nlist},Flat"
    if not factory.startswith("IVF"):
        return factory, None
    nlist = auto_nlist(n) if cfg.nlist == "auto" else cfg.nlist
    if "{nlist}" not in factory:
        nlist = int(factory[3:].split(",")[0].split("_")[0])
    if nlist > n:
        raise ValueError(
            f"index.nlist: {nlist} lists for {n} vectors; nlist must be <= the vector count "
            f"(FAISS wants >= {MIN_POINTS_PER_CENTROID} per list: <= {max(1, n // 39)} here)"
        )
    return factory.replace("{nlist}", str(nlist)), nlist


def build_index(x: np.ndarray, factory: str, cfg: IndexConfig) -> faiss.Index:
    """Train on a bounded sample of `x`, then add every row in batches."""
    x = np.ascontiguousarray(x, dtype="float32")
    n, d = x.shape
    try:
        index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise ValueError(f"index.factory: FAISS cannot build {factory!r}: {err}") from None
    if not index.is_trained:
        rng = np.random.default_rng(cfg.seed)
        xt = x[np.sort(rng.choice(n, size=min(n, cfg.train_sample), replace=False))]
        index.train(xt)
    for start in range(0, n, _ADD_BATCH):
        index.add(x[start:start + _ADD_BATCH])
    return index


def _candidates(index: faiss.Index, nlist: int | None) -> tuple[str | None, list[int]]:
    if nlist is not None:
        return "nprobe", sorted({min(2**p, nlist) for p in range(0, 16) if 2 ** (p - 1) < nlist})
    if "HNSW" in type(index).__name__ or hasattr(index, "hnsw"):
        return "efSearch", [16, 32, 64, 128, 256, 512]
    return None, []


def _without_self(ids: np.ndarray, rows: np.ndarray, k: int) -> list[np.ndarray]:
    """Drop each query's own row from its result list (leave-one-out), keep k."""
    return [r[r != q][:k] for r, q in zip(ids, rows, strict=True)]


def tune_search_param(index: faiss.Index, x: np.ndarray, nlist: int | None,
                      cfg: IndexConfig, k: int = 10) -> tuple[str | None, int | None, list[dict]]:
    """Sweep nprobe (IVF) or efSearch (HNSW); pick the smallest meeting target_recall.

    Queries are indexed rows searched leave-one-out: a query finding itself would inflate
    recall, since its own cell is always the first probed.
    """
    name, values = _candidates(index, nlist)
    if name is None:
        return None, None, []
    rng = np.random.default_rng(cfg.seed + 1)
    rows = np.sort(rng.choice(len(x), size=min(len(x), cfg.tune_queries), replace=False))
    xq, kk = x[rows], min(k + 1, len(x))
    exact = faiss.IndexFlatIP(x.shape[1])
    exact.add(x)
    gt = _without_self(exact.search(xq, kk)[1], rows, k)
    sweep, chosen = [], values[-1]
    for v in values:
        set_search_param(index, name, v)
        found = _without_self(index.search(xq, kk)[1], rows, k)
        sweep.append({name: v, "recall_at_10": recall_at_k(found, gt)})
        if sweep[-1]["recall_at_10"] >= cfg.target_recall:
            chosen = v
            break
    set_search_param(index, name, chosen)
    return name, chosen, sweep


@task(name="index", cache_policy=NO_CACHE)
def index_task(root: str = ".") -> str:
    """Build, tune and write the FAISS index folder."""
    run = start_stage("index", root)
    cfg, log = run.params.index, task_logger()
    dedup = run.inputs["dedup"]
    table = read_table(run.input_dirs["dedup"], "vectors.parquet", dedup)
    if dedup["space"] != run.inputs["reduce"]["space"]:
        raise ValueError(
            f"index: dedup vectors are in space {dedup['space'][:12]} but the transform is "
            f"for {run.inputs['reduce']['space'][:12]}; rerun dedup"
        )
    x = arrow_to_vectors(table.column(VECTOR_COLUMN))
    factory, nlist = resolve_factory(cfg, len(x))
    index = build_index(x, factory, cfg)
    if cfg.nprobe != "auto" and nlist is not None:
        param, value, sweep = "nprobe", min(cfg.nprobe, nlist), []
        set_search_param(index, param, value)
    else:
        param, value, sweep = tune_search_param(index, x, nlist, cfg)
    fp = stage_fingerprint("index", cfg, run.input_fingerprints)
    out = StageOutput(run.out_dir, "index", fp)
    faiss.write_index(index, str(out.path(INDEX_FILE)))
    out.write_table(CHUNKS_FILE, table.drop_columns([VECTOR_COLUMN]))
    shutil.copyfile(run.input_dirs["reduce"] / TRANSFORM_FILE, out.path(TRANSFORM_FILE))
    model = {**dedup["model"], "space": dedup["space"]}
    out.write_json(MODEL_FILE, model)
    card = {"factory": factory, "type": type(index).__name__, "metric": "inner_product",
            "n": index.ntotal, "d": index.d, "nlist": nlist, "search_param": param,
            "search_value": value, "recall_at_10": sweep[-1]["recall_at_10"] if sweep else
            (1.0 if param is None else None), "target_recall": cfg.target_recall,
            "sweep": sweep, "size_bytes": out.path(INDEX_FILE).stat().st_size}
    out.write_json(CARD_FILE, card)
    out.commit(run.manifest(fp, cfg, model=model, space=dedup["space"], card=card,
                            rows={"vectors": index.ntotal}))
    log.info("index: %s over %d x %d, %s=%s", factory, index.ntotal, index.d, param, value)
    return str(run.out_dir)


if __name__ == "__main__":
    main(index_task)
