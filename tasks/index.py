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
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.core.catalog import (
    CHUNKS,
    DROPPED,
    INDEX,
    INDEX_CARD,
    INDEX_CHUNKS,
    INDEX_DOC_INDEX,
    INDEX_DOCS,
    INDEX_MEMBERS,
    INDEX_METADATA,
    INDEX_MODEL,
    INDEX_SEARCH,
    INDEX_TRANSFORM,
    KEPT,
    TRANSFORM,
    VECTOR_COLUMN,
)
from tasks.core.config import IndexConfig, RunConfig, SearchConfig
from tasks.core.fingerprint import sha256_text, stage_fingerprint
from tasks.core.io import StageOutput, previous_keys, read_manifest
from tasks.core.lineage import index_metadata
from tasks.core.progress import task_logger
from tasks.core.runtime import StageRun, main, start_stage
from tasks.core.shards import Executor, map_ordered, open_executor
from tasks.core.vectors import (
    MIN_POINTS_PER_LIST,
    arrow_to_vectors,
    max_lists,
    sample_rows,
    vectors_to_arrow,
)
from tasks.encoders.tuned import carry_model, chosen_space
from tasks.query.documents import document_vectors
from tasks.query.ids import chunk_int_ids
from tasks.query.lexical import build_lexical, save_lexical
from tasks.query.probes import probe_queries
from tasks.query.recall import RecallProbe, sweep_search_param
from tasks.query.search import encode_queries, set_search_param
from tasks.query.transform import VectorTransform

_ADD_BATCH = 65_536


def auto_nlist(n: int) -> int:
    """~4*sqrt(n) lists (FAISS guidance: 4-16 sqrt(n)), with >= 39 training points each."""
    return max(1, min(int(round(4 * math.sqrt(n))), max_lists(n)))


def resolve_factory(cfg: IndexConfig, n: int, exact_ms: float | None = None
                    ) -> tuple[str, int | None]:
    """The concrete factory string and nlist (None for non-IVF) for `n` vectors.

    `factory: auto` keeps exact search (Flat) while `exact_ms`, its measured time per query,
    is within `max_query_ms`, else builds IVF-Flat (tuned later to `target_recall`).
    """
    factory = cfg.factory
    if factory == "auto":
        if exact_ms is None:
            raise ValueError("index.factory 'auto' needs the exact index's measured latency")
        factory = "Flat" if exact_ms <= cfg.max_query_ms else "IVF{nlist},Flat"
    if not factory.startswith("IVF"):
        return factory, None
    nlist = auto_nlist(n) if cfg.nlist == "auto" else cfg.nlist
    if "{nlist}" not in factory:
        nlist = int(factory[3:].split(",")[0].split("_")[0])
    if nlist > n:
        raise ValueError(
            f"index.nlist: {nlist} lists for {n} vectors; nlist must be <= the vector count "
            f"(FAISS wants >= {MIN_POINTS_PER_LIST} per list: <= {max(1, max_lists(n))} here)"
        )
    return factory.replace("{nlist}", str(nlist)), nlist


def check_factory(cfg: IndexConfig, d: int, n: int | None = None) -> None:
    """Refuse, before any stage runs, a factory string FAISS cannot parse for `d`-d vectors,
    and (when the vector count `n` of the previous run is known) more lists than vectors."""
    if cfg.factory == "auto":
        return
    new_index(d, cfg.factory.replace("{nlist}", "1"), cfg.factory)
    if n is not None and cfg.factory.startswith("IVF"):
        resolve_factory(cfg, n)  # raises when nlist exceeds the vectors


def new_index(d: int, factory: str, asked: str | None = None) -> faiss.Index:
    """An empty inner-product index from a FAISS factory string; ValueError in FAISS's own
    words, naming the string as the user wrote it (`asked`) when it is refused."""
    try:
        return faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        reason = str(err).strip().rsplit(": ", 1)[-1] or "cannot parse"
        raise ValueError(f"index.factory: FAISS cannot build {asked or factory!r} for {d}-d "
                         f"vectors ({reason}); e.g. 'Flat', 'IVF{{nlist}},Flat', "
                         "'IVF{nlist},PQ16', 'HNSW32'") from None


def train_index(x: np.ndarray, factory: str, cfg: IndexConfig) -> faiss.Index:
    """An empty `factory` index, trained (if it needs it) on a seeded sample of `x` of at
    most `train_sample` rows."""
    x = np.ascontiguousarray(x, dtype="float32")
    n, d = x.shape
    index = new_index(d, factory)
    if not index.is_trained:
        xt = x[sample_rows(n, cfg.train_sample, cfg.seed)]
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


def query_ms(index: faiss.Index, xq: np.ndarray, k: int = 10, n: int = 200) -> float:
    """Milliseconds per query, one query at a time (a batch of one, as a user searches): the
    median over at most `n` of `xq` after one warm-up search, so a few queries slowed by
    another process (a mean over 200 once read 7 ms for a 0.03 ms search) do not decide."""
    xq = np.ascontiguousarray(xq[:n], dtype="float32")
    index.search(xq[:1], k)
    times = []
    for i in range(len(xq)):
        started = time.perf_counter()
        index.search(xq[i:i + 1], k)
        times.append(time.perf_counter() - started)
    return 1e3 * float(np.median(times)) if times else 0.0


Fill = Callable[[faiss.Index, np.ndarray, np.ndarray | None], faiss.Index]


def build_index(x: np.ndarray, factory: str, cfg: IndexConfig,
                ids: np.ndarray | None = None, fill: Fill = fill_index) -> faiss.Index:
    """Train on a bounded sample of `x`, then add every row (with `ids`) in batches."""
    return fill(train_index(x, factory, cfg), x, ids)


def add_shard(shard: tuple[np.ndarray, np.ndarray], trained: np.ndarray) -> np.ndarray:
    """On a worker: the serialized trained index with one shard's rows added."""
    index = faiss.deserialize_index(trained)
    add_vectors(index, *shard)
    return faiss.serialize_index(index)


def fill_on_cluster(executor: Executor, trained: faiss.Index, x: np.ndarray,
                    ids: np.ndarray) -> faiss.Index:
    """Add shards of `x` in parallel into copies of the trained IVF index (one trained
    quantizer, broadcast once), then merge them in shard order: the inverted lists hold the
    same entries in the same order as one process adding every row."""
    blob = executor.client.scatter(faiss.serialize_index(trained), broadcast=True)
    rows = executor.shard_rows
    shards = ((x[s:s + rows], ids[s:s + rows]) for s in range(0, len(x), rows))
    merged = trained
    for part in map_ordered(executor, add_shard, shards, blob):
        index = faiss.deserialize_index(part)
        if merged is trained:
            merged = index
        else:
            merged.merge_from(index, 0)
    return merged


def fill_for(run_cfg: RunConfig) -> Fill:
    """How a trained index is filled: IVF indexes on the Dask cluster when `run.executor`
    is dask (the cluster is opened only then), anything else here."""
    def fill(trained: faiss.Index, x: np.ndarray, ids: np.ndarray | None) -> faiss.Index:
        ids = np.arange(len(x), dtype="int64") if ids is None else ids
        if run_cfg.executor != "dask" or not isinstance(faiss.downcast_index(trained),
                                                          faiss.IndexIVF):
            return fill_index(trained, x, ids)
        with open_executor(run_cfg) as executor:
            return fill_on_cluster(executor, trained, x, ids)

    return fill


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


_TUNING_KEYS = {"nprobe", "target_recall", "tune_queries", "retrain_growth", "doc_vectors"}


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
               value: int | None, sweep: list[dict], cfg: IndexConfig, size_bytes: int,
               **extra: Any) -> dict:
    """What the index is and how well it searches at its setting."""
    last = sweep[-1] if sweep else {}
    exact = param is None and factory == "Flat"
    return {"factory": factory, "type": type(faiss.downcast_index(index)).__name__,
            "metric": "inner_product", "n": index.ntotal, "d": index.d, "nlist": nlist,
            "search_param": param, "search_value": value, "target_recall": cfg.target_recall,
            "recall_at_10_corpus": 1.0 if exact else last.get("recall_corpus"),
            "recall_at_10_queries": 1.0 if exact else last.get("recall_queries"),
            "sweep": sweep, "size_bytes": size_bytes, **extra}


@dataclass
class BuiltIndex:
    """A FAISS index as built or updated, with what the card needs to say about it."""

    index: faiss.Index
    factory: str
    nlist: int | None
    trained_on: int
    churn: int
    why: str = ""
    exact_ms: float | None = None

    def card_facts(self, plan: IndexPlan) -> dict[str, Any]:
        """Training and update history, and why this factory, for the index card."""
        return {"trained_on": self.trained_on, "churn_since_train": self.churn,
                "update": plan.mode, "update_reason": plan.reason,
                "factory_reason": self.why, "exact_ms_per_query": self.exact_ms}

    def counts(self, plan: IndexPlan) -> dict[str, int]:
        """Vectors held, added and removed, for the manifest."""
        return {"vectors": self.index.ntotal, "added": len(plan.add_rows),
                "removed": len(plan.remove_ids)}


def index_rows(table: pa.Table) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(vectors, FAISS ids, text hashes) of the deduplicated rows."""
    return (arrow_to_vectors(table.column(VECTOR_COLUMN)),
            chunk_int_ids(table.column("chunk_id").to_pylist()),
            [sha256_text(t) for t in table.column("text").to_pylist()])


def probe_vectors(table: pa.Table, model: dict[str, Any], transform: VectorTransform,
                  cfg: IndexConfig, models: Path) -> np.ndarray:
    """Query-like probes (titles, sentences) embedded as queries are, for tuning; a tuned
    model's folder is found in `models`."""
    texts = [q for q, _ in probe_queries(table, cfg.tune_queries, cfg.seed)]
    return encode_queries(model, transform, texts, where="index", models=models)


def apply_plan(plan: IndexPlan, prev: dict | None, prev_index: faiss.Index | None,
               x: np.ndarray, int_ids: np.ndarray, cfg: IndexConfig,
               queries: Callable[[], np.ndarray], fill: Fill = fill_index) -> BuiltIndex:
    """Update the previous index in place, or build a new one, as `plan` says.

    A new `auto` index starts exact; it stays exact when one query (`queries()` embeds
    query-like probes) takes at most `max_query_ms` on it, else IVF is built instead.
    """
    if plan.mode == "incremental":
        card = prev["card"]
        index = update_index(prev_index, x[plan.add_rows], int_ids[plan.add_rows],
                             plan.remove_ids)
        churn = card.get("churn_since_train", 0) + len(plan.add_rows) + len(plan.remove_ids)
        return BuiltIndex(index, card["factory"], card["nlist"], card["trained_on"], churn,
                          card.get("factory_reason", ""), card.get("exact_ms_per_query"))
    if cfg.factory != "auto":
        factory, nlist = resolve_factory(cfg, len(x))
        return BuiltIndex(build_index(x, factory, cfg, int_ids, fill), factory, nlist, len(x),
                          0, "index.factory")
    exact = build_index(x, "Flat", cfg, int_ids)
    xq = queries()
    ms = round(query_ms(exact, xq if len(xq) else x), 4)
    factory, nlist = resolve_factory(cfg, len(x), ms)
    why = (f"exact search takes {ms} ms per query, "
           f"{'within' if nlist is None else 'over'} index.max_query_ms={cfg.max_query_ms}")
    index = exact if nlist is None else build_index(x, factory, cfg, int_ids, fill)
    return BuiltIndex(index, factory, nlist, len(x), 0, why, ms)


def choose_search_param(built: BuiltIndex, x: np.ndarray, int_ids: np.ndarray,
                        cfg: IndexConfig, queries: Callable[[], np.ndarray]
                        ) -> tuple[str | None, int | None, list[dict]]:
    """The search parameter, set on the index: `index.nprobe` when given, else tuned on
    query-like probes (`queries()` embeds them; called only when tuning); none for Flat."""
    if cfg.nprobe != "auto" and built.nlist is not None:
        value = min(cfg.nprobe, built.nlist)
        set_search_param(built.index, "nprobe", value)
        return "nprobe", value, []
    if built.nlist is not None or "HNSW" in built.factory:
        return tune_search_param(built.index, x, built.nlist, cfg, queries(), int_ids)
    return None, None, []


def check_space(dedup: dict[str, Any], reduce: dict[str, Any], want: dict[str, Any],
                where: Path) -> None:
    """Refuse vectors from another model than `want` (the one params name, a forced stale
    input) or from another transform than reduce's."""
    if dedup["model"]["fingerprint"] != want["fingerprint"]:
        raise ValueError(
            f"index: vectors in {where} come from model {dedup['model']['name']} "
            f"({dedup['model']['fingerprint'][:12]}), but encode.model is {want['name']} "
            f"({want['fingerprint'][:12]}); they are another embedding space. "
            "Rerun encode and what follows.")
    if dedup["space"] != reduce["space"]:
        raise ValueError(f"index: dedup vectors are in space {dedup['space'][:12]} but the "
                         f"transform is for {reduce['space'][:12]}; rerun dedup")


def _previous(out_dir: Path) -> tuple[dict | None, faiss.Index | None, dict[int, str]]:
    """The previous index folder's manifest, index and id -> text hash (if readable)."""
    keys = previous_keys(out_dir, INDEX_CHUNKS, "int_id", "text")
    if keys is None:
        return None, None, {}  # absent, unreadable or from an older layout: rebuild
    try:
        index = faiss.read_index(str(out_dir / INDEX.name))
    except RuntimeError:
        return None, None, {}
    return read_manifest(out_dir, "index"), index, keys


def group_members(dropped: pa.Table) -> pa.Table:
    """Each dropped duplicate under the kept chunk standing for its group (from dedup)."""
    return pa.table({"group_chunk_id": dropped.column("group_chunk_id"),
                     "chunk_id": dropped.column("dropped_chunk_id"),
                     **{c: dropped.column(c) for c in ("doc_id", "source", "similarity", "kind")}},
                    schema=INDEX_MEMBERS.schema())


def update_or_build(out_dir: Path, rows: tuple[np.ndarray, np.ndarray, list[str]], space: str,
                    cfg: IndexConfig, queries: Callable[[], np.ndarray], fill: Fill
                    ) -> tuple[BuiltIndex, IndexPlan]:
    """Plan against the previous index folder in `out_dir` (`plan_update`) and carry the plan
    out (`apply_plan`); `rows` are (vectors, FAISS ids, text hashes)."""
    x, int_ids, keys = rows
    prev, prev_index, prev_keys = _previous(out_dir)
    plan = plan_update(prev, prev_keys, int_ids, keys, space, cfg)
    return apply_plan(plan, prev, prev_index, x, int_ids, cfg, queries, fill), plan


def write_index_folder(out: StageOutput, built: BuiltIndex, table: pa.Table,
                       int_ids: np.ndarray, inputs: tuple[Path, pa.Table, Path],
                       model: dict[str, Any], search: SearchConfig) -> dict[str, Any]:
    """The FAISS index, the id -> chunk table, the transform (`inputs[0]`), the duplicate
    groups (from the dedup audit `inputs[1]`), the model (a tuned one's folder too, from
    the finetune output `inputs[2]`: what a query needs), the search settings and the
    lexical index; returns the sizes for the card."""
    faiss.write_index(built.index, str(out.path(INDEX)))
    out.write_table(INDEX_CHUNKS, table.drop_columns([VECTOR_COLUMN]).append_column(
        "int_id", pa.array(int_ids, pa.int64())))
    shutil.copyfile(inputs[0], out.path(INDEX_TRANSFORM))
    out.write_table(INDEX_MEMBERS, group_members(inputs[1]))
    out.write_json(INDEX_MODEL, model)
    carry_model(model.get("tuned"), inputs[2], out.tmp_dir)
    out.write_json(INDEX_SEARCH, search.model_dump(mode="json"))
    started = time.perf_counter()
    if table.num_rows:  # every chunk, kept ones then group members: no token is deduplicated
        texts = table.column("text").to_pylist() + inputs[1].column("text").to_pylist()
        save_lexical(build_lexical(texts, search), out.tmp_dir)
    return {"size_bytes": out.path(INDEX).stat().st_size,
            "lexical_seconds": round(time.perf_counter() - started, 3)}


def log_built(built: BuiltIndex, plan: IndexPlan, search: str, seconds: float) -> None:
    task_logger().info("index: %s %s over %d x %d (%s), %s in %.1f s", plan.mode,
                       built.factory, built.index.ntotal, built.index.d, plan.reason, search,
                       seconds)


def write_documents(out: StageOutput, rows: tuple[pa.Table, np.ndarray, pa.Table],
                    run: StageRun, how: str) -> int:
    """Document vectors (`tasks.query.documents`) from the kept rows, their vectors and
    dedup's dropped rows, and their exact index, beside the chunk index; returns how many
    documents (0 with `index.doc_vectors: none`)."""
    table, x, dropped = rows
    if how == "none":
        return 0
    tokens = None
    if how == "token_mean":
        counts = run.read(CHUNKS, ["chunk_id", "n_tokens"])
        tokens = dict(zip(counts.column("chunk_id").to_pylist(),
                          counts.column("n_tokens").to_pylist(), strict=True))
    docs, xd = document_vectors(table, x, dropped, tokens)
    out.write_table(INDEX_DOCS, docs.append_column(VECTOR_COLUMN, vectors_to_arrow(xd)))
    index = faiss.IndexFlatIP(xd.shape[1])
    index.add(xd)
    faiss.write_index(index, str(out.path(INDEX_DOC_INDEX)))
    return docs.num_rows


@task(name="index", cache_policy=NO_CACHE)
def index_task(root: str = ".") -> str:
    """Build (or update in place), tune and write the FAISS index folder."""
    run = start_stage("index", root)
    cfg, dedup = run.params.index, run.inputs["dedup"]
    _, want, _ = chosen_space(run.params.encode, run.input_dirs["finetune"])
    check_space(dedup, run.inputs["reduce"], want, run.input_dirs["dedup"])
    table = run.read(KEPT)
    x, int_ids, keys = index_rows(table)
    probes = cache(lambda: probe_vectors(table, dedup["model"], VectorTransform.load(
        run.input_path(TRANSFORM)), cfg, run.input_dirs["finetune"]))
    built, plan = update_or_build(run.out_dir, (x, int_ids, keys), dedup["space"], cfg,
                                  probes, fill_for(run.params.run))
    param, value, sweep = choose_search_param(built, x, int_ids, cfg, probes)
    fp, model = stage_fingerprint("index", cfg, run.input_fingerprints), dedup["model"] | {
        "space": dedup["space"]}
    with run.output(fp, cfg) as out:
        dropped = run.read(DROPPED)
        sizes = write_index_folder(out, built, table, int_ids, (run.input_path(TRANSFORM),
                                   dropped, run.input_dirs["finetune"]), model, run.params.search)
        card = index_card(built.index, built.factory, built.nlist, param, value, sweep, cfg,
                          **sizes, **built.card_facts(plan))
        out.write_json(INDEX_CARD, card)
        out.write_json(INDEX_METADATA, index_metadata(run, fp, model, card))
        out.record(model=model, space=dedup["space"], card=card, rows=built.counts(plan) | {
            "documents": write_documents(out, (table, x, dropped), run, cfg.doc_vectors)})
    log_built(built, plan, f"{param}={value}" if param else "exact search", run.seconds)
    return str(run.out_dir)


if __name__ == "__main__":
    main(index_task)
