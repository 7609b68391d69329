"""index: deduplicated vectors -> the index folder the query side needs, nothing else.

Folder: index.faiss (ids = chunk_int_ids), chunks.parquet (with int_id), transform.npz,
model.json (model fingerprint, query prefix), card.json (type, nlist, nprobe, recall, size).
Invariant: inner product on unit vectors; the index holds exactly the current chunks; the
search parameter is the smallest meeting `target_recall` recall@10 against exact search.
A previous index in the same space is updated in place (removals, additions) until the
churn since training passes `retrain_growth`.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.config import IndexConfig
from tasks.fingerprint import sha256_text, stage_fingerprint
from tasks.io import (
    VECTOR_COLUMN,
    StageOutput,
    arrow_to_vectors,
    previous_keys,
    read_manifest,
    read_table,
)
from tasks.lineage import METADATA_FILE, index_metadata
from tasks.probes import probe_queries
from tasks.runtime import main, start_stage, task_logger
from tasks.search import (
    CARD_FILE,
    CHUNKS_FILE,
    INDEX_FILE,
    MODEL_FILE,
    TRANSFORM_FILE,
    IdMap,
    chunk_int_ids,
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


def train_index(x: np.ndarray, factory: str, cfg: IndexConfig) -> faiss.Index:
    """An empty `factory` index, trained (if it needs it) on a seeded sample of `x` of at
    most `train_sample` rows."""
    x = np.ascontiguousarray(x, dtype="float32")
    n, d = x.shape
    try:
        index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise ValueError(f"index.factory: FAISS cannot build {factory!r}: {err}") from None
    if not index.is_trained:
        rng = np.random.default_rng(cfg.seed)
        xt = x[np.sort(rng.choice(n, size=min(n, cfg.train_sample), replace=False))]
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


def build_index(x: np.ndarray, factory: str, cfg: IndexConfig,
                ids: np.ndarray | None = None) -> faiss.Index:
    """Train on a bounded sample of `x`, then add every row (with `ids`) in batches."""
    return fill_index(train_index(x, factory, cfg), x, ids)


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


def _candidates(index: faiss.Index, nlist: int | None) -> tuple[str | None, list[int]]:
    if nlist is not None:
        return "nprobe", sorted({min(2**p, nlist) for p in range(0, 16) if 2 ** (p - 1) < nlist})
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    if hasattr(inner, "hnsw"):
        return "efSearch", [16, 32, 64, 128, 256, 512]
    return None, []


def _without_self(ids: np.ndarray, rows: np.ndarray, k: int) -> list[np.ndarray]:
    """Drop each query's own row from its result list (leave-one-out), keep k."""
    return [r[r != q][:k] for r, q in zip(ids, rows, strict=True)]


class RecallProbe:
    """Exact top-k answers for two probe sets: indexed rows (leave-one-out) and queries.

    Args:
        x: the indexed vectors, row i having FAISS id `int_ids[i]` (i when None).
        xq: query-like probe vectors, or None.
        n_rows: how many indexed rows to probe with.
    """

    def __init__(self, x: np.ndarray, xq: np.ndarray | None, n_rows: int, seed: int,
                 k: int = 10, int_ids: np.ndarray | None = None) -> None:
        rng = np.random.default_rng(seed)
        self.rows = np.sort(rng.choice(len(x), size=min(len(x), n_rows), replace=False))
        self.xr, self.k = x[self.rows], k
        self.id_map = IdMap(np.arange(len(x)) if int_ids is None else int_ids)
        self.xq = None if xq is None or not len(xq) else np.ascontiguousarray(xq, "float32")
        exact = faiss.IndexFlatIP(x.shape[1])
        exact.add(np.ascontiguousarray(x, dtype="float32"))
        self.kk = min(k + 1, len(x))
        self.gt_rows = _without_self(exact.search(self.xr, self.kk)[1], self.rows, k)
        self.gt_q = None if self.xq is None else exact.search(self.xq, min(k, len(x)))[1]

    def _rows(self, index: faiss.Index, xq: np.ndarray, k: int) -> np.ndarray:
        return self.id_map.rows(index.search(xq, k)[1])

    def measure(self, index: faiss.Index) -> dict[str, float]:
        """recall@k of `index` as currently set, on both probe sets, and ms per query."""
        out = {"recall_corpus": recall_at_k(
            _without_self(self._rows(index, self.xr, self.kk), self.rows, self.k),
            self.gt_rows)}
        if self.xq is not None:
            started = time.perf_counter()
            found = self._rows(index, self.xq, self.gt_q.shape[1])
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
                      cfg: IndexConfig, xq: np.ndarray | None = None,
                      int_ids: np.ndarray | None = None
                      ) -> tuple[str | None, int | None, list[dict]]:
    """Smallest nprobe / efSearch meeting `target_recall` recall@10 vs exact search on
    indexed rows searched leave-one-out and on query-like probes `xq` when given.

    Leave-one-out matters: a row finding itself inflates recall, since its own cell is
    always the first probed. Short queries land in other cells than passages do.
    """
    probe = RecallProbe(x, xq, cfg.tune_queries, cfg.seed + 1, int_ids=int_ids)
    return sweep_search_param(index, nlist, probe, cfg.target_recall)


@dataclass(frozen=True)
class IndexPlan:
    """Rebuild, or update the previous index in place: which rows to add, which ids to drop."""

    mode: str
    reason: str
    add_rows: np.ndarray
    remove_ids: np.ndarray


_TUNING_KEYS = {"nprobe", "target_recall", "tune_queries", "retrain_growth"}


def plan_update(prev: dict[str, Any] | None, prev_keys: dict[int, str], cur_ids: np.ndarray,
                cur_keys: list[str], space: str, cfg: IndexConfig) -> IndexPlan:
    """Decide between an incremental update and a rebuild.

    Args:
        prev: the previous index manifest (None when there is none).
        prev_keys: previous FAISS id -> text hash.
        cur_ids: current FAISS ids, one per row.
        cur_keys: current text hash per row.
        space: the current embedding space (model + transform).
        cfg: the index config.
    """
    everything = IndexPlan("rebuild", "", np.arange(len(cur_ids)), np.zeros(0, "int64"))
    same_cfg = prev is not None and {k: v for k, v in prev["config"].items()
                                     if k not in _TUNING_KEYS} == {
        k: v for k, v in cfg.model_dump(mode="json").items() if k not in _TUNING_KEYS}
    reason = ("no previous index" if prev is None else
              "embedding space changed (model or transform)" if prev["space"] != space else
              "index params changed" if not same_cfg else
              "HNSW cannot remove vectors" if "HNSW" in prev["card"]["factory"] else None)
    if reason:
        return IndexPlan("rebuild", reason, everything.add_rows, everything.remove_ids)
    cur = dict(zip(cur_ids.tolist(), cur_keys, strict=True))
    remove = np.array([i for i, k in prev_keys.items() if cur.get(i) != k], dtype="int64")
    add = np.array([r for r, (i, k) in enumerate(cur.items()) if prev_keys.get(i) != k],
                   dtype="int64")
    card = prev["card"]
    churn = card.get("churn_since_train", 0) + len(add) + len(remove)
    if churn > cfg.retrain_growth * max(card.get("trained_on", 1), 1):
        return IndexPlan("rebuild", f"{churn} vectors changed since training > retrain_growth "
                         f"{cfg.retrain_growth} x {card.get('trained_on')}",
                         everything.add_rows, everything.remove_ids)
    return IndexPlan("incremental", f"{len(add)} added, {len(remove)} removed", add, remove)


def index_card(index: faiss.Index, factory: str, nlist: int | None, param: str | None,
               value: int | None, sweep: list[dict], cfg: IndexConfig, size: int,
               **extra: Any) -> dict:
    """What the index is and how well it searches at its setting."""
    last = sweep[-1] if sweep else {}
    exact = param is None and factory == "Flat"
    return {"factory": factory, "type": type(faiss.downcast_index(index)).__name__,
            "metric": "inner_product", "n": index.ntotal, "d": index.d, "nlist": nlist,
            "search_param": param, "search_value": value, "target_recall": cfg.target_recall,
            "recall_at_10_corpus": 1.0 if exact else last.get("recall_corpus"),
            "recall_at_10_queries": 1.0 if exact else last.get("recall_queries"),
            "sweep": sweep, "size_bytes": size, **extra}


def _previous(out_dir: Path) -> tuple[dict | None, faiss.Index | None, dict[int, str]]:
    """The previous index folder's manifest, index and id -> text hash (if readable)."""
    keys = previous_keys(out_dir, "index", CHUNKS_FILE, "int_id", "text")
    if keys is None:
        return None, None, {}  # absent, unreadable or from an older layout: rebuild
    try:
        index = faiss.read_index(str(out_dir / INDEX_FILE))
    except RuntimeError:
        return None, None, {}
    return read_manifest(out_dir, "index"), index, keys


def _check_model(run: Any, dedup: dict[str, Any]) -> None:
    """Refuse vectors from another model than the one params name (a forced stale input)."""
    from tasks.models import model_fingerprint  # noqa: PLC0415

    want = model_fingerprint(run.params.encode)["fingerprint"]
    have = dedup["model"]["fingerprint"]
    if have != want:
        raise ValueError(
            f"index: vectors in {run.input_dirs['dedup']} come from model "
            f"{dedup['model']['name']} ({have[:12]}), but encode.model is "
            f"{run.params.encode.model} ({want[:12]}); they are another embedding space. "
            "Rerun encode and what follows."
        )
    if dedup["space"] != run.inputs["reduce"]["space"]:
        raise ValueError(
            f"index: dedup vectors are in space {dedup['space'][:12]} but the transform is "
            f"for {run.inputs['reduce']['space'][:12]}; rerun dedup"
        )


@task(name="index", cache_policy=NO_CACHE)
def index_task(root: str = ".") -> str:
    """Build (or update in place), tune and write the FAISS index folder."""
    run = start_stage("index", root)
    cfg, log = run.params.index, task_logger()
    dedup = run.inputs["dedup"]
    _check_model(run, dedup)
    table = read_table(run.input_dirs["dedup"], "vectors.parquet", dedup)
    x = arrow_to_vectors(table.column(VECTOR_COLUMN))
    int_ids = chunk_int_ids(table.column("chunk_id").to_pylist())
    keys = [sha256_text(t) for t in table.column("text").to_pylist()]
    prev, prev_index, prev_keys = _previous(run.out_dir)
    plan = plan_update(prev, prev_keys, int_ids, keys, dedup["space"], cfg)
    if plan.mode == "incremental":
        index = update_index(prev_index, x[plan.add_rows], int_ids[plan.add_rows],
                             plan.remove_ids)
        factory, nlist = prev["card"]["factory"], prev["card"]["nlist"]
        trained_on = prev["card"]["trained_on"]
        churn = prev["card"].get("churn_since_train", 0) + len(plan.add_rows) + len(
            plan.remove_ids)
    else:
        factory, nlist = resolve_factory(cfg, len(x))
        index = build_index(x, factory, cfg, int_ids)
        trained_on, churn = len(x), 0
    transform = VectorTransform.load(run.input_dirs["reduce"] / TRANSFORM_FILE)
    if cfg.nprobe != "auto" and nlist is not None:
        param, value, sweep = "nprobe", min(cfg.nprobe, nlist), []
        set_search_param(index, param, value)
    elif nlist is not None or "HNSW" in factory:
        probes = [q for q, _ in probe_queries(table, cfg.tune_queries, cfg.seed)]
        xq = encode_queries(dedup["model"], transform, probes, where="index")
        param, value, sweep = tune_search_param(index, x, nlist, cfg, xq, int_ids)
    else:
        param, value, sweep = None, None, []
    fp = stage_fingerprint("index", cfg, run.input_fingerprints)
    out = StageOutput(run.out_dir, "index", fp)
    faiss.write_index(index, str(out.path(INDEX_FILE)))
    out.write_table(CHUNKS_FILE, table.drop_columns([VECTOR_COLUMN]).append_column(
        "int_id", pa.array(int_ids, pa.int64())))
    shutil.copyfile(run.input_dirs["reduce"] / TRANSFORM_FILE, out.path(TRANSFORM_FILE))
    model = {**dedup["model"], "space": dedup["space"]}
    out.write_json(MODEL_FILE, model)
    card = index_card(index, factory, nlist, param, value, sweep, cfg,
                      out.path(INDEX_FILE).stat().st_size, trained_on=trained_on,
                      churn_since_train=churn, update=plan.mode, update_reason=plan.reason)
    out.write_json(CARD_FILE, card)
    out.write_json(METADATA_FILE, index_metadata(run, fp, model, card))
    changes = {"vectors": index.ntotal, "added": len(plan.add_rows),
               "removed": len(plan.remove_ids)}
    out.commit(run.manifest(fp, cfg, model=model, space=dedup["space"], card=card,
                            rows=changes))
    log.info("index: %s %s over %d x %d (%s), %s=%s", plan.mode, factory, index.ntotal,
             index.d, plan.reason, param, value)
    return str(run.out_dir)


if __name__ == "__main__":
    main(index_task)
