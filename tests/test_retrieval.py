from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from tasks.core.config import EvaluateConfig
from tasks.evaluate import quality_gate
from tasks.evaluation.metrics import doc_rankings, retrieval_metrics
from tasks.evaluation.runs import append_run, diff_runs, read_runs
from tasks.query.probes import probe_queries


def test_metrics_equal_hand_computed_values():
    # q1: relevant A at rank 2. q2: relevant C (rank 1) and D (rank 6).
    run = {"q1": {"B": 0.9, "A": 0.8, "C": 0.7},
           "q2": {"C": 0.9, "E": 0.8, "F": 0.7, "G": 0.6, "H": 0.5, "D": 0.4}}
    qrels = {"q1": {"A": 1}, "q2": {"C": 1, "D": 1}}
    m = retrieval_metrics(qrels, run)
    ndcg_q1 = 1 / math.log2(3)
    ndcg_q2 = (1 + 1 / math.log2(7)) / (1 + 1 / math.log2(3))
    assert m["recall_at_1"] == pytest.approx(0.25)
    assert m["recall_at_5"] == pytest.approx(0.75)
    assert m["recall_at_10"] == pytest.approx(1.0)
    assert m["mrr_at_10"] == pytest.approx(0.75)
    assert m["ndcg_at_10"] == pytest.approx((ndcg_q1 + ndcg_q2) / 2, abs=1e-6)


def test_query_with_nothing_retrieved_counts_as_zero():
    m = retrieval_metrics({"q1": {"A": 1}, "q2": {"B": 1}}, {"q1": {"A": 1.0}, "q2": {}})
    assert m["recall_at_1"] == pytest.approx(0.5) and m["mrr_at_10"] == pytest.approx(0.5)


def test_doc_rankings_best_chunk_and_deduplicated_docs():
    row_docs = [["d1"], ["d2", "d3"], ["d1"]]  # row 1 also stands for d3's dropped chunk
    ranked = doc_rankings(np.array([[0.9, 0.8, 0.7]]), np.array([[2, 1, 0]]), row_docs)
    assert list(ranked[0]) == ["d1", "d2", "d3"]


def test_probes_use_title_else_a_sentence():
    chunks = pa.table({"doc_id": ["a", "b"], "title": ["Kelp forest ecology", None],
                       "text": ["x", "Short. Volcanic ash can ground aircraft for many days."]})
    probes = dict((d, q) for q, d in probe_queries(chunks, 10, 0))
    assert probes == {"a": "Kelp forest ecology",
                      "b": "Volcanic ash can ground aircraft for many days."}


def test_gate_lists_each_failure():
    cfg = EvaluateConfig(min_index_recall=0.9, min_probe_recall_at_10=0.5)
    assert quality_gate({"probe_recall_at_10": 0.6, "index_recall_at_10_corpus": 0.95}, cfg) == []
    assert quality_gate({"probe_recall_at_10": 0.1, "index_recall_at_10_queries": 0.5}, cfg) == [
        "index_recall_at_10_queries = 0.5000 < 0.9", "probe_recall_at_10 = 0.1000 < 0.5"]


def test_run_registry_appends_and_diffs(tmp_path):
    path = tmp_path / "runs.jsonl"
    a = {"params": {"reduce": {"pca_dims": None}}, "metrics": {"ndcg": 0.5},
         "fingerprints": {"reduce": "1" * 64}}
    b = {"params": {"reduce": {"pca_dims": 64}}, "metrics": {"ndcg": 0.6},
         "fingerprints": {"reduce": "2" * 64}}
    assert append_run(path, a) == 1 and append_run(path, b) == 2
    runs = read_runs(path)
    diff = diff_runs(runs[0], runs[1])
    assert diff["params"] == {"reduce.pca_dims": (None, 64)}
    assert diff["metrics"]["ndcg"] == (0.5, 0.6, 0.1)
    assert diff["stages"] == {"reduce": ("1" * 12, "2" * 12)}
