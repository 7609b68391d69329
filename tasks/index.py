"""index: deduplicated vectors -> the index folder the query side needs, nothing else.

Folder: index.faiss, chunks.parquet (row i of the index = row i here), transform.npz,
model.json (model fingerprint, query prefix), card.json (type, nlist, nprobe, recall, size).
Invariant: inner product on unit vectors; the search parameter is the smallest meeting
`target_recall` recall@10 against exact search.
"""

from __future__ import annotations

import math
import shutil
import time

import faiss
import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.config import IndexConfig
from tasks.fingerprint import stage_fingerprint
from tasks.io import VECTOR_COLUMN, StageOutput, arrow_to_vectors, read_table
from tasks.lineage import METADATA_FILE, index_metadata
from tasks.probes import probe_queries
from tasks.runtime import main, start_stage, task_logger
from tasks.search import (
    CARD_FILE,
    CHUNKS_FILE,
    INDEX_FILE,
    MODEL_FILE,
    TRANSFORM_FILE,
    encode_queries,
    recall_at_k,
    set_search_param,
)
from tasks.transform import VectorTransform

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


class RecallProbe:
    """Exact top-k answers for two probe sets: indexed rows (leave-one-out) and queries."""

    def __init__(self, x: np.ndarray, xq: np.ndarray | None, n_rows: int, seed: int,
                 k: int = 10) -> None:
        rng = np.random.default_rng(seed)
        self.rows = np.sort(rng.choice(len(x), size=min(len(x), n_rows), replace=False))
        self.xr, self.k = x[self.rows], k
        self.xq = None if xq is None or not len(xq) else np.ascontiguousarray(xq, "float32")
        exact = faiss.IndexFlatIP(x.shape[1])
        exact.add(x)
        self.kk = min(k + 1, len(x))
        self.gt_rows = _without_self(exact.search(self.xr, self.kk)[1], self.rows, k)
        self.gt_q = None if self.xq is None else exact.search(self.xq, min(k, len(x)))[1]

    def measure(self, index: faiss.Index) -> dict[str, float]:
        """recall@k of `index` as currently set, on both probe sets, and ms per query."""
        out = {"recall_corpus": recall_at_k(
            _without_self(index.search(self.xr, self.kk)[1], self.rows, self.k), self.gt_rows)}
        if self.xq is not None:
            started = time.perf_counter()
            found = index.search(self.xq, self.gt_q.shape[1])[1]
            out["ms_per_query"] = round(1e3 * (time.perf_counter() - started) / len(self.xq), 4)
            out["recall_queries"] = recall_at_k(found, self.gt_q)
        return out


def sweep_search_param(index: faiss.Index, nlist: int | None, probe: RecallProbe,
                       target: float | None = None) -> tuple[str | None, int | None, list[dict]]:
    """Recall per nprobe (IVF) / efSearch (HNSW) value; with `target`, stop at the first
    value meeting it on every probe set and leave the index set to it."""
    name, values = _candidates(index, nlist)
    if name is None:
        return None, None, []
    sweep, chosen = [], values[-1]
    for v in values:
        set_search_param(index, name, v)
        sweep.append({name: v, **probe.measure(index)})
        worst = min(sweep[-1].get("recall_queries", 1.0), sweep[-1]["recall_corpus"])
        if target is not None and worst >= target:
            chosen = v
            break
    set_search_param(index, name, chosen)
    return name, chosen, sweep


def tune_search_param(index: faiss.Index, x: np.ndarray, nlist: int | None,
                      cfg: IndexConfig, xq: np.ndarray | None = None
                      ) -> tuple[str | None, int | None, list[dict]]:
    """Smallest nprobe / efSearch meeting `target_recall` recall@10 vs exact search on
    indexed rows searched leave-one-out and on query-like probes `xq` when given.

    Leave-one-out matters: a row finding itself inflates recall, since its own cell is
    always the first probed. Short queries land in other cells than passages do.
    """
    probe = RecallProbe(x, xq, cfg.tune_queries, cfg.seed + 1)
    return sweep_search_param(index, nlist, probe, cfg.target_recall)


def index_card(index: faiss.Index, factory: str, nlist: int | None, param: str | None,
               value: int | None, sweep: list[dict], cfg: IndexConfig, size: int) -> dict:
    """What the index is and how well it searches at its setting."""
    last = sweep[-1] if sweep else {}
    exact = param is None and factory == "Flat"
    return {"factory": factory, "type": type(index).__name__, "metric": "inner_product",
            "n": index.ntotal, "d": index.d, "nlist": nlist, "search_param": param,
            "search_value": value, "target_recall": cfg.target_recall,
            "recall_at_10_corpus": 1.0 if exact else last.get("recall_corpus"),
            "recall_at_10_queries": 1.0 if exact else last.get("recall_queries"),
            "sweep": sweep, "size_bytes": size}


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
    transform = VectorTransform.load(run.input_dirs["reduce"] / TRANSFORM_FILE)
    if cfg.nprobe != "auto" and nlist is not None:
        param, value, sweep = "nprobe", min(cfg.nprobe, nlist), []
        set_search_param(index, param, value)
    elif nlist is not None or "HNSW" in factory:
        probes = [q for q, _ in probe_queries(table, cfg.tune_queries, cfg.seed)]
        xq = encode_queries(dedup["model"], transform, probes, where="index")
        param, value, sweep = tune_search_param(index, x, nlist, cfg, xq)
    else:
        param, value, sweep = None, None, []
    fp = stage_fingerprint("index", cfg, run.input_fingerprints)
    out = StageOutput(run.out_dir, "index", fp)
    faiss.write_index(index, str(out.path(INDEX_FILE)))
    out.write_table(CHUNKS_FILE, table.drop_columns([VECTOR_COLUMN]))
    shutil.copyfile(run.input_dirs["reduce"] / TRANSFORM_FILE, out.path(TRANSFORM_FILE))
    model = {**dedup["model"], "space": dedup["space"]}
    out.write_json(MODEL_FILE, model)
    card = index_card(index, factory, nlist, param, value, sweep, cfg,
                      out.path(INDEX_FILE).stat().st_size)
    out.write_json(CARD_FILE, card)
    out.write_json(METADATA_FILE, index_metadata(run, fp, model, card))
    out.commit(run.manifest(fp, cfg, model=model, space=dedup["space"], card=card,
                            rows={"vectors": index.ntotal}))
    log.info("index: %s over %d x %d, %s=%s", factory, index.ntotal, index.d, param, value)
    return str(run.out_dir)


if __name__ == "__main__":
    main(index_task)
