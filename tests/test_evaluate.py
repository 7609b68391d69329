"""Evaluation through the real stages (no Prefect): labelled metrics, the gate, plots."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.core.registry import STAGE_NAMES
from tests.workspace import copy_workspace, make_workspace, run_stages

TINY_CORPUS = [
    {"_id": "volcano", "title": "Volcanoes", "text": "Magma rises through the crust and erupts "
     "as lava, ash and volcanic gas from a crater."},
    {"_id": "bread", "title": "Baking bread", "text": "Knead flour, water, salt and yeast into "
     "a dough, let it rise, then bake it in a hot oven."},
    {"_id": "stocks", "title": "Stock markets", "text": "Investors buy and sell shares of "
     "companies on exchanges; prices move with earnings and interest rates."},
    {"_id": "football", "title": "Football", "text": "Two teams of eleven players try to kick "
     "the ball into the opposing goal; the goalkeeper may use hands."},
]
TINY_QUERIES = {"q1": ("lava erupting from a crater", "volcano"),
                "q2": ("how to knead dough and bake a loaf", "bread"),
                "q3": ("who may touch the ball with their hands in soccer", "football")}


def test_tiny_labelled_corpus_metrics(tmp_path):
    from tasks.core.params_file import write_overrides

    ws = make_workspace(tmp_path / "ws")
    beir = ws / "tiny"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in TINY_CORPUS) + "\n")
    (beir / "queries.jsonl").write_text("\n".join(
        json.dumps({"_id": q, "text": t}) for q, (t, _) in TINY_QUERIES.items()) + "\n")
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t1\n" for q, (_, d) in TINY_QUERIES.items()))
    write_overrides(ws / "params.yaml", {"ingest.source": "tiny", "clean.min_chars": 5})
    run_stages(ws, STAGE_NAMES[:-1])
    metrics = json.loads((ws / "metrics.json").read_text())
    labeled = metrics["labeled"]["corpus.jsonl"]
    choice = labeled.pop("choice")  # labels outrank probes: picked on half, shown on the rest
    assert labeled.pop("search_chosen_on_them") is False  # 3 labels: too few for the build
    assert choice["winner"] in choice["candidates"] and choice["held_out"]["ndcg_at_10"] == 1.0
    buckets = metrics["buckets"]["corpus.jsonl"]["dense"]
    assert (buckets["question"]["queries"], buckets["keywords"]["queries"]) == (2, 1)
    # Each query's one relevant document is ranked first: every measure is exactly 1.
    assert labeled == {"recall_at_1": 1.0, "recall_at_5": 1.0, "recall_at_10": 1.0,
                       "recall_at_100": 1.0, "mrr_at_10": 1.0, "ndcg_at_10": 1.0, "queries": 3}
    assert metrics["probe_queries"] == 4 and metrics["probe_recall_at_1"] == 1.0


@pytest.fixture(scope="module")
def sample_ws(sample_run, tmp_path_factory):
    return copy_workspace(sample_run, tmp_path_factory.mktemp("eval") / "ws")


def test_plots_are_real_pngs(sample_ws):
    for name in ("map.png", "recall_vs_nprobe.png", "nn_similarity.png"):
        data = (sample_ws / "data/08_evaluate/plots" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name


def test_metadata_and_lineage_reach_ingest(sample_ws):
    from tasks.core.config import load_params
    from tasks.core.lineage import lineage_chain

    meta = json.loads((sample_ws / "data/07_index/metadata.json").read_text())
    ingest = json.loads((sample_ws / "data/01_ingest/_manifest.json").read_text())
    assert meta["corpus"]["sha256"] == ingest["corpus_sha256"]
    assert meta["lineage"]["ingest"] == ingest["fingerprint"]
    assert meta["embedding_model"]["name"] == "sentence-transformers/all-MiniLM-L6-v2"
    chain = lineage_chain(sample_ws, load_params(sample_ws / "params.yaml"), "index")
    assert [m["stage"] for m in chain] == ["index", "dedup", "reduce", "encode", "finetune",
                                           "chunk", "clean", "ingest"]


def test_random_vectors_trip_the_gate_and_keep_the_published_index(sample_ws):
    from flows.pipeline import STAGE_TASKS
    from tasks.core.io import StageOutput, read_manifest
    from tasks.core.vectors import vectors_to_arrow
    from tasks.storage.published import read_pointer

    good = json.loads((sample_ws / "metrics.json").read_text())
    assert good["gate"]["passed"] and good["probe_recall_at_10"] >= 0.9
    pointer = read_pointer(sample_ws / "published")
    published = sample_ws / "published" / pointer["version"]
    before = {p.name: p.read_bytes() for p in published.iterdir()}

    enc_dir = sample_ws / "data/04_encode"
    manifest = read_manifest(enc_dir, "encode")
    table = pq.read_table(enc_dir / "vectors.parquet")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(table.num_rows, 384)).astype("float32")
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    out = StageOutput(enc_dir, "encode", manifest["fingerprint"])
    out.write_table("vectors.parquet", pa.table({"chunk_id": table.column("chunk_id"),
                                                 "vector": vectors_to_arrow(x)}))
    out.commit({k: v for k, v in manifest.items() if k not in ("files", "versions")})

    # The stamps still claim the real model, so drop the built index: otherwise it would be
    # updated in place (same space, same texts) and keep the real vectors.
    shutil.rmtree(sample_ws / "data/07_index")
    run_stages(sample_ws, ("reduce", "dedup", "index"))
    with pytest.raises(ValueError, match="quality gate failed: .*dense_probe_recall_at_10"):
        STAGE_TASKS["evaluate"].fn(root=str(sample_ws))
    bad = json.loads((sample_ws / "metrics.json").read_text())
    assert bad["dense_probe_recall_at_10"] < 0.2 < good["dense_probe_recall_at_10"] - 0.6
    assert not bad["gate"]["passed"]
    with pytest.raises(ValueError, match="gate did not pass"):
        STAGE_TASKS["publish"].fn(root=str(sample_ws))
    assert read_pointer(sample_ws / "published") == pointer
    assert {p.name: p.read_bytes() for p in published.iterdir()} == before
