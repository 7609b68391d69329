"""Metric names, written once, and document-level retrieval metrics through ir-measures
(pytrec_eval underneath).

A document is retrieved at the rank of its best chunk; a chunk dropped by dedup as a
duplicate of a retrieved chunk retrieves its own document too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ir_measures
import numpy as np
from ir_measures import RR, R, nDCG

MEASURES = (R @ 1, R @ 5, R @ 10, R @ 100, RR @ 10, nDCG @ 10)
NAMES = {str(m): n for m, n in zip(
    MEASURES, ("recall_at_1", "recall_at_5", "recall_at_10", "recall_at_100", "mrr_at_10",
               "ndcg_at_10"), strict=True)}
# metrics.json keys: retrieval measures carry the prefix of their query set.
PROBE, LABELED = "probe_", "labeled_"
LABELED_AVERAGED = ("recall_at_10", "mrr_at_10", "ndcg_at_10")  # mean over BEIR sets
PROBE_RECALL_AT_10, PROBE_NDCG_AT_10 = PROBE + "recall_at_10", PROBE + "ndcg_at_10"
LABELED_NDCG_AT_10 = LABELED + "ndcg_at_10"
INDEX_RECALL_CORPUS = "index_recall_at_10_corpus"
INDEX_RECALL_QUERIES = "index_recall_at_10_queries"
INDEX_MS_PER_QUERY = "index_ms_per_query"
# The embeddings alone: a lexical side can hide broken vectors from the headline metrics.
DENSE_PROBE_RECALL_AT_10 = "dense_" + PROBE_RECALL_AT_10
# A fine-tuned model beside its base model (tasks/evaluation/base_vs_tuned.py).
BASE_VS_TUNED = "base_vs_tuned"
# The quality gate: metric -> the EvaluateConfig field holding its floor.
GATE = ((INDEX_RECALL_QUERIES, "min_index_recall"), (INDEX_RECALL_CORPUS, "min_index_recall"),
        (PROBE_RECALL_AT_10, "min_probe_recall_at_10"),
        (DENSE_PROBE_RECALL_AT_10, "min_dense_probe_recall_at_10"),
        (LABELED_NDCG_AT_10, "min_labeled_ndcg_at_10"))
# What run summaries and `embedpipe compare` show.
HEADLINE = (PROBE_RECALL_AT_10, PROBE_NDCG_AT_10, LABELED_NDCG_AT_10, INDEX_RECALL_QUERIES,
            INDEX_RECALL_CORPUS, "silhouette", "nmi")
COMPARE_COLUMNS = (PROBE_RECALL_AT_10, PROBE_NDCG_AT_10, DENSE_PROBE_RECALL_AT_10,
                   LABELED_NDCG_AT_10, INDEX_RECALL_QUERIES, "silhouette", "vectors", "dim",
                   "index_size_bytes")


def doc_rankings(scores: np.ndarray, ids: np.ndarray, row_docs: Sequence[Sequence[str]],
                 depth: int = 100) -> list[dict[str, float]]:
    """Per query, doc_id -> score of its best chunk, top `depth` documents.

    Args:
        scores: (nq, k) similarities from the index.
        ids: (nq, k) index rows (-1 for none).
        row_docs: for each index row, the documents it stands for (its own first).
        depth: documents kept per query.
    """
    out = []
    for srow, irow in zip(scores, ids, strict=True):
        ranked: dict[str, float] = {}
        for s, i in zip(srow, irow, strict=True):
            if i < 0:
                continue
            for doc in row_docs[i]:
                ranked.setdefault(doc, float(s) - 1e-6 * len(ranked))
            if len(ranked) >= depth:
                break
        out.append(dict(list(ranked.items())[:depth]))
    return out


def retrieval_metrics(qrels: dict[str, dict[str, int]],
                      run: dict[str, dict[str, float]]) -> dict[str, float]:
    """recall@1/5/10/100, MRR@10, nDCG@10 averaged over the queries in `qrels`."""
    if not qrels:
        return {}
    qrel_rows = [ir_measures.Qrel(q, d, rel) for q, docs in qrels.items()
                 for d, rel in docs.items()]
    run_rows = [ir_measures.ScoredDoc(q, d, s) for q, docs in run.items()
                for d, s in docs.items()]
    # Averaged over every query in qrels: a query with nothing retrieved scores zero.
    agg = ir_measures.calc_aggregate(MEASURES, qrel_rows, run_rows)
    return {NAMES[str(m)]: round(float(agg.get(m, 0.0)), 6) for m in MEASURES}


def check_gate(evaluate_manifest: dict[str, Any], stage: str, unchanged: str) -> None:
    """Refuse to hand on an index whose evaluation gate did not pass (`unchanged`: what
    stays as it was, for the message)."""
    gate = evaluate_manifest.get("gate", {})
    if not gate.get("passed"):
        raise ValueError(f"{stage}: the evaluation gate did not pass ({gate.get('failures')}); "
                         f"{unchanged} unchanged")
