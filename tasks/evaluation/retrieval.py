"""Retrieval through the index folder's own query path: every search mode with and without
duplicate expansion, per query style (question / keywords / identifier), and, with labels,
the fusion chosen on one half of the queries and reported on the other."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tasks.core.config import SEARCH_MODES
from tasks.encoders.loading import release_local_encoders
from tasks.evaluation import metrics as names
from tasks.evaluation.beir import find_beir_sets, pooled_labels, read_beir
from tasks.evaluation.metrics import doc_rankings, retrieval_metrics
from tasks.query.fusion_choice import MIN_PER_HALF, candidate_plans, choice_record, pick
from tasks.query.search import IndexFolder
from tasks.query.weights import BUCKETS, query_bucket

DOC_DEPTH = 100
MIN_LABELS = 2 * MIN_PER_HALF  # labelled queries the build chooses on, at least


def row_documents(folder: IndexFolder, expand: bool = True) -> list[list[str]]:
    """For each index row, its own document, then (`expand`) the documents of the chunks
    deduplicated onto it: a hit on the row counts for any of them."""
    out = []
    for doc, members in zip(folder.chunks.column("doc_id").to_pylist(), folder.members,
                            strict=True):
        docs = [doc]
        for m in members if expand else ():
            if m["doc_id"] not in docs:
                docs.append(m["doc_id"])
        out.append(docs)
    return out


def variant(mode: str, expand: bool) -> str:
    """The name a (search mode, duplicate expansion) pair is reported under."""
    return mode if expand else f"{mode}_no_expansion"


def headline_variant(folder: IndexFolder) -> str:
    """The variant users get from this folder: its search mode (as chosen at build under
    `fusion: auto`) and expansion setting."""
    return variant(folder.plan.mode, folder.search.expand_duplicates != "off")


def mode_runs(folder: IndexFolder, texts: list[str], qids: list[str], xq: np.ndarray,
              plans: list[tuple[str, dict[str, Any]]] | None = None
              ) -> Iterator[tuple[str, dict[str, dict[str, float]]]]:
    """(variant, each query's document ranking) for every search mode with and without
    expansion (or, given `plans`, each named set of `rank` arguments, expanded), yielded
    one at a time: a variant's rankings (up to `DOC_DEPTH` documents a query) are let go
    before the next is ranked (all of them held at once cost 200 MB at 2,682 queries).
    Each side is searched once for all of them (`side_lists`)."""
    depth = min(folder.index.ntotal, 3 * DOC_DEPTH)
    row_docs = {expand: row_documents(folder, expand) for expand in (True, False)}
    sides = folder.side_lists(texts, depth, xq)  # searched once, fused per variant
    for name, args in plans or [(m, {"mode": m}) for m in SEARCH_MODES]:
        scores, ids = folder.rank(texts, depth, xq=xq, sides=sides, **args)
        for expand, docs in row_docs.items():
            if plans is None or expand:
                ranked = doc_rankings(scores, ids, docs, DOC_DEPTH)
                yield (name if plans else variant(name, expand),
                       dict(zip(qids, ranked, strict=True)))


def bucket_metrics(bucket_of: dict[str, str], qrels: dict[str, dict[str, int]],
                   run: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per query style (`bucket_of`: query -> question, keywords or identifier) with
    labelled queries, one variant's averaged metrics of `names.LABELED_AVERAGED` and the
    query count."""
    out: dict[str, dict[str, float]] = {}
    for bucket in BUCKETS:
        mine = {q: r for q, r in qrels.items() if bucket_of.get(q) == bucket}
        if mine:
            m = retrieval_metrics(mine, {q: run[q] for q in mine})
            out[bucket] = {**{k: m[k] for k in names.LABELED_AVERAGED}, "queries": len(mine)}
    return out


def query_set_metrics(folder: IndexFolder, texts: list[str], qrels: dict[str, dict[str, int]],
                      qids: list[str], xq: np.ndarray | None = None
                      ) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Retrieval metrics of one query set in every search mode, with and without expansion,
    and, for the expanded variants, per query style (`bucket_metrics`).

    Queries are embedded once (`xq`, when the caller has them already) and ranked in each
    mode through the index's own query path.
    """
    if not texts:
        return {}, {}
    bucket_of = {q: query_bucket(t) for q, t in zip(qids, texts, strict=True)}
    variants, buckets = {}, {}
    for name, run in mode_runs(folder, texts, qids,
                               folder.encode_queries(texts) if xq is None else xq):
        variants[name] = retrieval_metrics(qrels, run)
        if not name.endswith("_no_expansion") and (per := bucket_metrics(bucket_of, qrels,
                                                                          run)):
            buckets[name] = per
    return variants, buckets


def labeled_choice(folder: IndexFolder, texts: list[str], qrels: dict[str, dict[str, int]],
                   qids: list[str], seed: int, xq: np.ndarray | None = None) -> dict[str, Any]:
    """Labels outrank probes: the search the labelled queries pick, on a seeded half of
    them with the index's guard (`fusion_choice.pick`), reported on the other half. `xq`:
    the queries already embedded."""
    order = np.random.default_rng(seed).permutation(len(qids))
    halves = {"selection": sorted(qids[i] for i in order[: (len(qids) + 1) // 2]),
              "held_out": sorted(qids[i] for i in order[(len(qids) + 1) // 2:])}
    plans = [(name, {"mode": p.mode, "fusion": p.fusion, "alpha": p.alpha,
                     "weighting": p.weighting}) for name, p in candidate_plans(folder.search)]
    runs = mode_runs(folder, texts, qids, folder.encode_queries(texts) if xq is None else xq,
                     plans)
    table = {name: {half: retrieval_metrics({q: qrels[q] for q in ids},
                                            {q: run[q] for q in ids})
                    for half, ids in halves.items()} for name, run in runs}
    winner, why = pick(table, folder.search.fusion_margin)
    built = folder.card.get("search_choice") or {}
    return {"winner": winner, "reason": why, "probe_winner": built.get("winner") if built.get(
        "basis", "probes") == "probes" else None, "held_out": table[winner]["held_out"],
        "candidates": table}


def labeled_search_choice(folder: IndexFolder, source: Path, seed: int
                          ) -> dict[str, Any] | None:
    """Labels outrank probes, at build: under `search.fusion: auto` with BEIR queries and
    qrels beside the corpus (`MIN_PER_HALF` a half at least, every set found pooled), the
    search they pick on a seeded half with the probes' guard (`labeled_choice`), judged on
    both halves, for the index card; None where probes choose (no labels, too few, the
    params fix the search, or no lexical index)."""
    cfg = folder.search
    if cfg.mode != "hybrid" or cfg.fusion != "auto" or folder.lexical is None:
        return None
    texts, rels, sets = pooled_labels(source)
    qids = sorted(texts)
    if len(qids) < MIN_LABELS:
        return None
    queries = [texts[q] for q in qids]
    xq = folder.encode_queries(queries)
    release_local_encoders()  # every query is embedded: the model goes before the rankings
    choice = labeled_choice(folder, queries, rels, qids, seed, xq)
    return choice_record(cfg, choice["candidates"], "labels") | {
        "labeled_queries": len(qids), "label_sets": sets}


def choosing_labels(source: Path | None) -> Path | None:
    """`source` where enough BEIR labels lie under it to choose the search on them
    (`MIN_LABELS`), else None: the index's identity holds the labels only where they can
    decide its choice (an S3 corpus, whose labels are not read, then matches a local one
    with too few)."""
    return source if source is not None and len(pooled_labels(source)[0]) >= MIN_LABELS \
        else None


def labeled_metrics(folder: IndexFolder, source: Path, seed: int = 0
                    ) -> dict[str, dict[str, Any]]:
    """Per BEIR dataset found under the ingest source: its query count, its metrics in
    every variant and per query style (`query_set_metrics`), and the search its labels
    pick (`labeled_choice`). Every set's queries are embedded first, once; the model is
    let go before the rankings."""
    sets = []
    for rel, _, queries, qrels in find_beir_sets(source):
        texts, rels = read_beir(rel, queries, qrels)
        qids = sorted(texts)
        sets.append((rel, [texts[q] for q in qids], rels, qids))
    embedded = [folder.encode_queries(texts) for _, texts, _, _ in sets]
    release_local_encoders()
    out = {}
    for (rel, texts, rels, qids), xq in zip(sets, embedded, strict=True):
        variants, buckets = query_set_metrics(folder, texts, rels, qids, xq)
        out[rel] = {"queries": len(qids), "variants": variants, "buckets": buckets,
                    "choice": labeled_choice(folder, texts, rels, qids, seed, xq)
                    if folder.lexical is not None else None}
    return out


def mode_table(probe: dict[str, dict[str, float]], labeled: dict[str, dict[str, Any]]
               ) -> dict[str, dict[str, float]]:
    """Per variant: the probe metrics and the labeled ones averaged over BEIR sets."""
    out: dict[str, dict[str, float]] = {}
    for name, m in probe.items():
        out[name] = {names.PROBE + k: v for k, v in m.items()}
        for key in names.LABELED_AVERAGED if labeled else ():
            out[name][names.LABELED + key] = round(float(np.mean(
                [s["variants"][name][key] for s in labeled.values()])), 6)
    return out
