"""An index built or updated in place: the plan (rebuild, or which rows to add and ids to
remove), carrying it out, the search parameter it gets and the card that says what it is.
An update gives what a rebuild over the same vectors gives: rows are keyed by their vector."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import pyarrow as pa

from tasks.core.catalog import VECTOR_COLUMN
from tasks.core.config import IndexConfig
from tasks.core.fingerprint import sha256_bytes, sha256_text
from tasks.core.vectors import arrow_to_vectors
from tasks.indexing.build import Fill, build_index, fill_index, update_index
from tasks.indexing.factory import auto_factory, resolve_factory
from tasks.indexing.ids import chunk_int_ids
from tasks.indexing.recall import set_search_param
from tasks.indexing.tuning import query_ms, tune_search_param


@dataclass(frozen=True)
class IndexPlan:
    """Rebuild, or update the previous index in place: which rows to add, which ids to drop."""

    mode: str
    reason: str
    add_rows: np.ndarray
    remove_ids: np.ndarray


# An exact index holds the vectors in row order: rebuilt, it costs what an update costs (one
# copy of the vectors) and gives the bytes a full build gives; updated, rows would move.
EXACT_REBUILT = "exact (Flat) index: rebuilt, as cheap as an update and what a full build gives"
_TUNING_KEYS = {"nprobe", "target_recall", "tune_queries", "retrain_growth", "doc_vectors"}


def plan_update(prev: dict[str, Any] | None, prev_keys: dict[int, str], cur_ids: np.ndarray,
                cur_keys: list[str], space: str, cfg: IndexConfig,
                no_previous: str | None = None) -> IndexPlan:
    """Decide between an incremental update and a rebuild.

    Args:
        prev: the previous index manifest (None when there is none).
        prev_keys: previous FAISS id -> text hash.
        cur_ids: current FAISS ids, one per row.
        cur_keys: current text hash per row.
        space: the current embedding space (model + transform).
        cfg: the index config.
        no_previous: why there is no previous index to update, when `prev` is None (the
            card says it); "no previous index" when not given.
    """
    everything = IndexPlan("rebuild", "", np.arange(len(cur_ids)), np.zeros(0, "int64"))
    same_cfg = prev is not None and {k: v for k, v in prev["config"].items()
                                     if k not in _TUNING_KEYS} == {
        k: v for k, v in cfg.model_dump(mode="json").items() if k not in _TUNING_KEYS}
    reason = ((no_previous or "no previous index") if prev is None else
              "embedding space changed (model or transform)" if prev["space"] != space else
              "index params changed" if not same_cfg else
              "HNSW cannot remove vectors" if "HNSW" in prev["card"]["factory"] else
              EXACT_REBUILT if prev["card"]["factory"] == "Flat" else None)
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


@dataclass
class BuiltIndex:
    """A FAISS index as built or updated, with what the card needs to say about it."""

    index: faiss.Index
    factory: str
    nlist: int | None
    trained_on: int
    churn: int
    why: str = ""

    def card_facts(self, plan: IndexPlan, xq: np.ndarray) -> dict[str, Any]:
        """Training and update history, why this factory, and (reported, never deciding)
        the measured time of one query from `xq` at the chosen setting, for the card."""
        return {"trained_on": self.trained_on, "churn_since_train": self.churn,
                "update": plan.mode, "update_reason": plan.reason,
                "factory_reason": self.why, "ms_per_query": round(query_ms(self.index, xq), 4)}

    def counts(self, plan: IndexPlan) -> dict[str, int]:
        """Vectors held, added and removed, for the manifest."""
        return {"vectors": self.index.ntotal, "added": len(plan.add_rows),
                "removed": len(plan.remove_ids)}


def vector_keys(x: np.ndarray) -> list[str]:
    """sha256 of each vector's float32 bytes: what the index holds for a row, so a changed
    vector under an unchanged id and text is replaced by an update too."""
    x = np.ascontiguousarray(x, dtype="float32")
    return [sha256_bytes(row.tobytes()) for row in x]


def index_rows(table: pa.Table, x: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(vectors, FAISS ids, keys) of the deduplicated rows (`x`: their vectors, already
    read); a key is the hash of the row's vector hash, as `previous_keys` reads it back from
    the `vector_sha256` column."""
    x = arrow_to_vectors(table.column(VECTOR_COLUMN)) if x is None else x
    return (x, chunk_int_ids(table.column("chunk_id").to_pylist()),
            [sha256_text(k) for k in vector_keys(x)])


def apply_plan(plan: IndexPlan, prev: dict | None, prev_index: faiss.Index | None,
               x: np.ndarray, int_ids: np.ndarray, cfg: IndexConfig,
               fill: Fill = fill_index) -> BuiltIndex:
    """Update the previous index in place, or build a new one, as `plan` says; the type
    comes from params and the vectors' shape alone (`auto_factory`), never from a timing.
    """
    if plan.mode == "incremental":
        card = prev["card"]
        index = update_index(prev_index, x[plan.add_rows], int_ids[plan.add_rows],
                             plan.remove_ids)
        churn = card.get("churn_since_train", 0) + len(plan.add_rows) + len(plan.remove_ids)
        return BuiltIndex(index, card["factory"], card["nlist"], card["trained_on"], churn,
                          card.get("factory_reason", ""))
    factory, nlist = resolve_factory(cfg, len(x), x.shape[1])
    why = auto_factory(cfg, len(x), x.shape[1])[1] if cfg.factory == "auto" else "index.factory"
    return BuiltIndex(build_index(x, factory, cfg, int_ids, fill), factory, nlist, len(x), 0,
                      why)


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
