"""Fusing the dense and the lexical candidate lists into one ranking.

Two fusions: reciprocal rank (RRF: ranks only, each side a weighted vote) and a convex
combination of normalised scores (alpha x dense + (1 - alpha) x lexical, Bruch et al., "An
Analysis of Fusion Functions for Hybrid Retrieval", ACM TOIS 2023). Each side's scores are
normalised over its own candidates of the query (min-max or z-score), so a side whose
scores are flat (BM25 matching only "how do I") moves the ranking little, and a side with
a standout hit moves it much; a row one side did not return gets that side's lowest
normalised score. `alpha` may differ per query (tasks/query/weights.py). Ties go to the
smaller row number, so results are stable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.core.config import FUSIONS, SEARCH_MODES, SearchConfig

Ranked = tuple[np.ndarray, np.ndarray]  # (scores (nq, n), rows (nq, n), -1 for none)


def normalize_scores(scores: np.ndarray, valid: np.ndarray, method: str) -> np.ndarray:
    """Each row's valid scores on one scale: min-max to 0..1 (all equal: 1), or z-scores
    (one candidate, or all equal: 0); invalid entries are left at 0.

    Args:
        scores: (nq, n) raw scores.
        valid: (nq, n) which entries are real candidates.
        method: "minmax" or "zscore".
    """
    s = np.where(valid, scores.astype("float64"), np.nan)
    out = np.zeros_like(s)
    has = valid.any(axis=1)
    if not has.any():
        return out
    sv = s[has]
    if method == "minmax":
        lo, hi = np.nanmin(sv, axis=1, keepdims=True), np.nanmax(sv, axis=1, keepdims=True)
        span = hi - lo
        z = np.where(span > 0, (sv - lo) / np.where(span > 0, span, 1.0), 1.0)
    elif method == "zscore":
        mean, sd = np.nanmean(sv, axis=1, keepdims=True), np.nanstd(sv, axis=1, keepdims=True)
        z = np.where(sd > 0, (sv - mean) / np.where(sd > 0, sd, 1.0), 0.0)
    else:
        raise ValueError(f"score normalization {method!r}: expected minmax or zscore")
    out[has] = np.where(valid[has], z, 0.0)
    return out


def fuse_convex(dense: Ranked, lexical: Ranked, alpha: np.ndarray | float, method: str,
                k: int) -> Ranked:
    """alpha x normalised dense + (1 - alpha) x normalised lexical, top `k` rows per query.
    Every query at once (each side holds a row at most once, as both searches return them).

    Args:
        dense: (scores, rows) of the dense side.
        lexical: (scores, rows) of the lexical side.
        alpha: the dense weight, one per query or one for all.
        method: the normalisation ("minmax" or "zscore").
        k: rows kept per query.
    """
    nq = dense[1].shape[0]
    alphas = np.broadcast_to(np.asarray(alpha, dtype="float64"), (nq,))[:, None]
    norms, floors = [], []
    for scores, rows in (dense, lexical):
        valid = rows >= 0
        norms.append(normalize_scores(scores, valid, method))
        floor = np.where(valid, norms[-1], np.inf).min(axis=1, initial=np.inf)
        floors.append(np.where(np.isfinite(floor), floor, 0.0)[:, None])  # for absent rows
    (nd, nl), rows = (dense[1].shape[1], lexical[1].shape[1]), _joined(dense[1], lexical[1])
    # each entry's value on each side: its own side's score, the other's floor until paired
    d_val = np.hstack([norms[0], np.broadcast_to(floors[0], (nq, nl))])
    l_val = np.hstack([np.broadcast_to(floors[1], (nq, nd)), norms[1]])
    order = np.argsort(rows, axis=1, kind="stable")  # a row's dense entry, then its lexical
    rows, d_val, l_val = (np.take_along_axis(a, order, axis=1) for a in (rows, d_val, l_val))
    paired = np.zeros_like(rows, dtype=bool)
    paired[:, :-1] = (rows[:, 1:] == rows[:, :-1]) & (rows[:, :-1] < _NONE)
    l_val[:, :-1] = np.where(paired[:, :-1], l_val[:, 1:], l_val[:, :-1])
    fused = alphas * d_val + (1.0 - alphas) * l_val
    keep = rows < _NONE
    keep[:, 1:] &= ~paired[:, :-1]  # a pair's lexical entry: counted in its dense one
    return _top(np.where(keep, fused, -np.inf), rows, keep, k)


_NONE = np.iinfo(np.int64).max  # an empty slot, sorted after every row


def _joined(*sides: np.ndarray) -> np.ndarray:
    """The sides' rows side by side (nq, n1 + n2 + ...), an empty slot (-1) as `_NONE`."""
    rows = np.hstack(sides).astype("int64")
    return np.where(rows >= 0, rows, _NONE)


def _top(fused: np.ndarray, rows: np.ndarray, keep: np.ndarray, k: int) -> Ranked:
    """The `k` best `keep` entries per query by `fused`, ties to the smaller row: (scores
    float32, rows with -1 past the last)."""
    order = np.lexsort((rows, -fused), axis=-1)[:, :k]
    kept = np.take_along_axis(keep, order, axis=1)
    width = max(k, 0)
    out_s = np.zeros((rows.shape[0], width), dtype="float32")
    out_r = np.full((rows.shape[0], width), -1, dtype="int64")
    out_s[:, :order.shape[1]] = np.where(kept, np.take_along_axis(fused, order, axis=1), 0.0)
    out_r[:, :order.shape[1]] = np.where(kept, np.take_along_axis(rows, order, axis=1), -1)
    return out_s, out_r


def fuse_rrf(ranked: list[tuple[np.ndarray, np.ndarray | float]], rrf_k: int, k: int
             ) -> Ranked:
    """Reciprocal rank fusion: each row scores sum(weight / (rrf_k + rank)) over the lists
    that hold it (rank from 1), summed in the lists' order; ties go to the smaller row
    number, so results are stable. Every query at once.

    Args:
        ranked: (rows (nq, n) with -1 for none, weight: one, or one per query) per side.
        rrf_k: the fusion constant (60 in the original paper).
        k: rows kept per query.
    """
    nq = ranked[0][0].shape[0]
    votes = np.hstack([np.broadcast_to(np.asarray(w, dtype="float64"), (nq,))[:, None]
                       / (rrf_k + np.arange(1, rows.shape[1] + 1)) for rows, w in ranked])
    rows = _joined(*(rows for rows, _ in ranked))
    order = np.argsort(rows, axis=1, kind="stable")  # a row's votes in the lists' order
    rows, votes = np.take_along_axis(rows, order, axis=1), np.take_along_axis(votes, order, 1)
    first = np.ones_like(rows, dtype=bool)
    first[:, 1:] = rows[:, 1:] != rows[:, :-1]
    starts = np.flatnonzero(first.ravel())
    total = np.zeros(rows.size)
    if rows.size:  # reduceat refuses an empty array
        total[starts] = np.add.reduceat(votes.ravel(), starts)
    keep = first & (rows < _NONE)
    return _top(np.where(keep, total.reshape(rows.shape), -np.inf), rows, keep, k)


@dataclass(frozen=True)
class SearchPlan:
    """How one search runs: a mode, and for hybrid the fusion, its dense weight `alpha`
    (rrf: the dense share of dense_weight + lexical_weight) and whether each query's own
    evidence moves it."""

    mode: str
    fusion: str | None = None
    alpha: float | None = None
    weighting: bool = False

    def describe(self) -> str:
        """One line for `embedpipe status`, the run summary and logs."""
        if self.mode != "hybrid":
            return f"{self.mode} alone"
        what = "reciprocal rank fusion" if self.fusion == "rrf" else (
            f"convex score fusion, dense weight {self.alpha}")
        return f"hybrid: {what}" + (", moved per query" if self.weighting else "")


def resolve_plan(cfg: SearchConfig, choice: dict[str, Any] | None, mode: str | None = None,
                 fusion: str | None = None, alpha: float | None = None,
                 weighting: bool | None = None) -> SearchPlan:
    """The plan a search runs with: the arguments where given, else the folder's settings
    (`cfg`), where `fusion: auto` reads the choice made at index build (`choice`, from the
    card). Without an explicit mode, a choice of one side alone is used as it is; asked for
    hybrid, the choice's best fusion is used. An index card without a choice (built before
    it) fuses by reciprocal rank."""
    for name, value, allowed in (("mode", mode, SEARCH_MODES), ("fusion", fusion, FUSIONS)):
        if value is not None and value not in allowed:
            raise ValueError(f"search {name} {value!r}: expected one of {', '.join(allowed)}")
    asked, mode = mode, mode or cfg.mode
    weighting = cfg.query_weighting if weighting is None else weighting
    if mode != "hybrid":
        return SearchPlan(mode)
    fusion = fusion or cfg.fusion
    if fusion == "auto":
        if not choice:
            return SearchPlan("hybrid", "rrf", _rrf_alpha(cfg), weighting)
        if asked is None and choice["mode"] != "hybrid":
            return SearchPlan(choice["mode"])
        fusion, alpha = choice["fusion"], alpha if alpha is not None else choice["alpha"]
    if fusion == "rrf":
        return SearchPlan("hybrid", "rrf", _rrf_alpha(cfg) if alpha is None else alpha,
                          weighting)
    return SearchPlan("hybrid", "convex", cfg.alpha if alpha is None else alpha, weighting)


def _rrf_alpha(cfg: SearchConfig) -> float:
    total = cfg.dense_weight + cfg.lexical_weight
    return cfg.dense_weight / total if total > 0 else 0.5


def fuse_plan(plan: SearchPlan, dense: Ranked, lexical: Ranked, alphas: np.ndarray,
              cfg: SearchConfig, k: int) -> Ranked:
    """The hybrid ranking of `plan` from both sides' candidates; `alphas`: each query's
    dense weight (the plan's alpha, moved per query when the plan says so)."""
    if plan.fusion == "rrf":
        total = cfg.dense_weight + cfg.lexical_weight or 2.0
        return fuse_rrf([(dense[1], alphas * total), (lexical[1], (1.0 - alphas) * total)],
                        cfg.rrf_k, k)
    return fuse_convex(dense, lexical, alphas, cfg.normalization, k)
