"""finetune: pairs without labels, hard negatives, the gate, the stage's fingerprint, and a
tuned model (really trained, a few steps on the sample corpus) served end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.core.config import FinetuneConfig
from tasks.tuning.gate import GateSet, decide, gate_set
from tasks.tuning.negatives import mine_negatives
from tasks.tuning.pairs import (
    MiningSettings,
    cloze_pair,
    heading_pairs,
    mine_pairs,
    split_documents,
)
from tasks.tuning.user_pairs import read_jsonl_pairs
from tests.workspace import copy_workspace, env_with_venv, run_stages

ALL_KINDS = ("cloze", "heading", "neighbour")
CASTLES = ("Castles in Wales\n\nEdward the First built a ring of stone castles across north "
           "Wales after the conquest of 1283. Caernarfon and Conwy were raised in a few "
           "years by thousands of workers. Their walls still stand beside the sea today.")
ORBITS = ("Orbits of the Moon\n\nThe Moon keeps one face toward the Earth because tidal "
          "forces locked its rotation long ago. Its orbit slowly widens by a few centimetres "
          "each year. Laser reflectors left by astronauts measure that distance precisely.")
BREAD = ("Sourdough bread rises with wild yeast and lactic bacteria kept in a starter. A "
         "starter is fed flour and water every day at room temperature. The dough ferments "
         "for many hours, which gives the crumb its sour taste and open holes.")


def chunk_table(docs: dict[str, list[str]]) -> pa.Table:
    rows = [{"chunk_id": f"{d}:{i}", "doc_id": d, "chunk_index": i, "title": None, "text": t}
            for d, texts in docs.items() for i, t in enumerate(texts)]
    return pa.Table.from_pylist(rows)


def test_split_is_seeded_and_a_document_keeps_its_side_as_the_corpus_grows():
    ids = [f"doc-{i}" for i in range(2000)]
    train, held = split_documents(ids[:1000], 0.2, seed=0)
    assert 150 < len(held) < 250 and not train & held
    _, held_more = split_documents(ids, 0.2, seed=0)
    assert held_more & set(ids[:1000]) == held  # added documents move no old one
    assert split_documents(ids[:1000], 0.2, seed=1)[1] != held


def test_cloze_removes_its_sentence_or_keeps_it_at_the_keep_rate():
    rng = np.random.default_rng(0)
    sentence, rest = cloze_pair(ORBITS, rng, keep=0.0)
    assert sentence in ORBITS and sentence not in rest and len(rest) < len(ORBITS)
    sentence, whole = cloze_pair(ORBITS, np.random.default_rng(0), keep=1.0)
    assert sentence in whole and whole == ORBITS.strip()
    assert cloze_pair("One short sentence only here.", rng, 0.0) is None


def test_headings_are_short_standalone_lines_not_code():
    pairs = heading_pairs(CASTLES, None)
    assert pairs == [("Castles in Wales", CASTLES.split("\n\n", 1)[1])]
    assert heading_pairs("x = compute(a, b)\n\n" + BREAD, None) == []
    assert heading_pairs(BREAD, "Sourdough at Home")[0][0] == "Sourdough at Home"


def test_pairs_come_only_from_training_documents_with_their_kinds():
    chunks = chunk_table({"a": [CASTLES, BREAD], "b": [ORBITS], "c": [BREAD + " More."]})
    pairs = mine_pairs(chunks, {"a", "b"}, MiningSettings(ALL_KINDS, 0.0, 100, 0))
    assert set(pairs.column("doc_id").to_pylist()) == {"a", "b"}
    assert set(pairs.column("kind").to_pylist()) == set(ALL_KINDS)
    neighbour = pairs.filter(pa.compute.equal(pairs["kind"], "neighbour")).to_pylist()
    assert neighbour == [{"anchor": CASTLES, "positive": BREAD, "kind": "neighbour",
                          "doc_id": "a", "chunk_id": "a:1"}]
    capped = mine_pairs(chunks, {"a", "b"}, MiningSettings(ALL_KINDS, 0.0, 2, 0))
    assert capped.num_rows == 2
    assert mine_pairs(chunks, {"a", "b"}, MiningSettings(("cloze",), 0.0, 100, 0)).column(
        "kind").to_pylist() == ["cloze"] * 3


def test_negatives_never_from_the_positives_document_or_duplicate_group():
    pairs = pa.Table.from_pylist([
        {"anchor": "wild yeast starter for sourdough", "positive": BREAD, "kind": "cloze",
         "doc_id": "a", "chunk_id": "a:0"}])
    pool = chunk_table({"a": [BREAD], "b": [BREAD.upper()], "c": [ORBITS], "d": [CASTLES],
                        "e": ["A starter of wild yeast needs flour and water and sourdough."]})
    negatives, counts = mine_negatives(pairs, pool, "bm25", seed=0, threshold=0.95)
    assert negatives == ["A starter of wild yeast needs flour and water and sourdough."]
    assert counts == {"with_negative": 1, "without_negative": 0}


def test_negatives_skip_near_duplicates_by_the_base_models_cosine(encoder):
    pairs = pa.Table.from_pylist([{"anchor": "wild yeast starter", "positive": BREAD,
                                   "kind": "cloze", "doc_id": "a", "chunk_id": "a:0"}])
    near = BREAD.replace("many hours", "many long hours")  # another doc, same passage
    pool = chunk_table({"b": [near], "c": [ORBITS]})

    def encode(texts, as_queries):
        return encoder.encode(texts, normalize_embeddings=True, convert_to_numpy=True)

    def drawn(threshold):
        return {mine_negatives(pairs, pool, "dense", seed, threshold, encode)[0][0]
                for seed in range(8)}

    assert drawn(0.95) == {ORBITS}
    assert drawn(1.01) == {ORBITS, near}  # drawn too, once it no longer counts as a twin


def test_gate_probes_only_held_out_documents_and_hides_their_text():
    chunks = chunk_table({"a": [CASTLES], "b": [ORBITS], "c": [BREAD]})
    gate = gate_set(chunks, {"b"}, n_queries=10, max_chunks=2, seed=0)
    assert list(gate.qrels.values()) == [{"b": 1}]
    (probe,) = gate.queries.values()
    assert probe in ORBITS and len(gate.texts) == 2 and "b" in gate.docs
    assert probe not in gate.texts[gate.docs.index("b")]


def _gate_of(n: int, labeled: int = 0) -> GateSet:
    """n probes and `labeled` labelled queries, each with one relevant document of its own."""
    kinds = {f"q{i}": "cloze" for i in range(n)} | {f"l{i}": "labeled" for i in range(labeled)}
    return GateSet({q: q for q in kinds}, {q: {f"d-{q}": 1} for q in kinds}, kinds, [], [])


def _ranked_at(ranks: dict[str, int]) -> dict[str, dict[str, float]]:
    """Rankings that put each query's document at the given rank (1-based) among fillers."""
    return {q: {(f"d-{q}" if i == r else f"x{i}"): 1.0 - i / 100 for i in range(1, 21)}
            for q, r in ranks.items()}


def test_gate_uses_the_tuned_model_only_when_its_gain_is_beyond_noise():
    gate = _gate_of(40)
    base = _ranked_at({f"q{i}": 3 for i in range(40)})
    always = _ranked_at({f"q{i}": 2 for i in range(40)})  # every query one rank better
    d = decide(gate, base, always, "ndcg_at_10", 0.005, 0.95, seed=0)
    assert d["use"] == "tuned" and d["n"] == 40 and d["wins"] == 40 and d["lower"] > 0.1
    # a mean gain over min_gain that is noise: 6 queries much better, 5 much worse, the rest
    # the same (the old rule, tuned mean - base mean >= min_gain, took this model)
    noisy = _ranked_at({f"q{i}": 1 if i < 6 else 20 if i < 11 else 3 for i in range(40)})
    d = decide(gate, base, noisy, "ndcg_at_10", 0.005, 0.95, seed=0)
    assert d["mean_gain"] > 0.005 and d["lower"] < 0 and d["use"] == "base"
    assert "interval" in d["reason"] and "n=40" in d["reason"]
    assert decide(gate, base, noisy, "ndcg_at_10", -1.0, 0.95, seed=0)["use"] == "tuned"
    again = decide(gate, base, noisy, "ndcg_at_10", 0.005, 0.95, seed=0)
    assert again == d  # seeded
    assert decide(_gate_of(0), {}, {}, "ndcg_at_10", 0.0, 0.95, 0)["use"] == "base"


def test_gate_labels_outrank_probes():
    gate = _gate_of(40, labeled=30)
    base = _ranked_at({f"q{i}": 3 for i in range(40)} | {f"l{i}": 1 for i in range(30)})
    probes_up = _ranked_at({f"q{i}": 1 for i in range(40)} | {f"l{i}": 2 for i in range(30)})
    d = decide(gate, base, probes_up, "ndcg_at_10", 0.0, 0.95, seed=0)
    assert d["group"] == "labeled" and d["n"] == 30 and d["use"] == "base"


def test_user_pairs_errors_name_the_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"query": "q", "positive": "p"}\n\n{"query": "q2"}\n')
    with pytest.raises(ValueError, match=r"pairs.jsonl: line 3: .*'positive'"):
        read_jsonl_pairs(path)
    path.write_text('{"query": "q", "positive": "p"}\n')
    pairs, held = read_jsonl_pairs(path)
    assert pairs.to_pylist()[0]["kind"] == "user" and held is None


def test_a_share_of_the_users_pairs_is_held_out_as_labelled_gate_queries(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(f'{{"query": "question {i}", "positive": "answer {i}"}}\n'
                            for i in range(200)))
    pairs, held = read_jsonl_pairs(path, share=0.2, seed=0)
    assert 20 < len(held.queries) < 60 and pairs.num_rows + len(held.queries) == 200
    trained = set(pairs.column("anchor").to_pylist())
    assert not trained & set(held.queries.values())
    qid = next(iter(held.queries))
    (doc,) = held.qrels[qid]
    assert held.docs[doc] == held.queries[qid].replace("question", "answer")
    chunks = chunk_table({"a": [CASTLES], "b": [ORBITS, held.docs[doc]]})
    gate = gate_set(chunks, {"b"}, 10, 100, 0, held)
    assert gate.kinds[qid] == "labeled" and gate.docs.count(doc) == 1
    assert gate.texts.count(held.docs[doc]) == 1  # its chunk twin is left out


BASE = {"base_model": {"files_sha256": "x"}, "user_pairs_sha256": None}


def _fingerprint(params, chunk_fp="c1", facts=None):
    from tasks.core.registry import fingerprint

    return fingerprint("finetune", params, {"chunk": chunk_fp}, facts or BASE)


def test_fingerprint_moves_with_its_params_and_inputs_and_nothing_else():
    from tasks.core.config import parse_params
    from tasks.core.registry import get_stage

    base_keys = [k for k in get_stage("finetune").params if k != "finetune"]

    on = {"finetune": {"enabled": True}}
    fp = _fingerprint(parse_params(on))
    changed = {"pairs": "p.jsonl", "kinds": ["cloze"], "holdout": 0.3, "max_pairs": 99,
               "cloze_keep": 0.5, "negatives": "both", "loss": "gist", "batch_size": 16,
               "learning_rate": 1e-4, "max_seq_length": 64, "max_steps": 7,
               "min_gain": 0.1, "gate_confidence": 0.9, "gate_metric": "recall_at_1",
               "gate_queries": 11, "gate_chunks": 101, "retrain_churn": 0.5, "seed": 3}
    assert set(changed) == set(FinetuneConfig.model_fields) - {"enabled", "max_minutes"}
    for key, value in changed.items():
        assert _fingerprint(parse_params({"finetune": {"enabled": True, key: value}})) != fp
    # a guard, not a stop: the clock never decides the model
    assert _fingerprint(parse_params({"finetune": {"enabled": True, "max_minutes": 1.0}})) == fp
    base_values = {"encode.model": "/some/model", "encode.revision": "r1",
                   "encode.max_seq_length": 128, "encode.passage_prefix": "p: ",
                   "encode.query_prefix": "q: ", "dedup.threshold": 0.9}
    assert set(base_values) == set(base_keys)
    for key, value in base_values.items():
        group, name = key.split(".")
        assert _fingerprint(parse_params(on | {group: {name: value}})) != fp, key
    for unrelated in ({"index": {"seed": 5}}, {"run": {"log_level": "DEBUG"}},
                      {"encode": {"batch_size": 8}}, {"search": {"mode": "dense"}}):
        assert _fingerprint(parse_params(on | unrelated)) == fp
    assert _fingerprint(parse_params(on), chunk_fp="c2") != fp
    assert _fingerprint(parse_params(on), facts=BASE | {"base_model": {"files_sha256": "y"}}
                        ) != fp
    assert _fingerprint(parse_params(on), facts=BASE | {"user_pairs_sha256": "p"}) != fp


# --- real training: a few steps on the sample corpus ---------------------------------

@pytest.fixture(scope="module")
def sample_chunks(sample_run):
    return pq.read_table(sample_run / "data/03_chunk/chunks.parquet")


@pytest.mark.slow
def test_gate_keeps_the_base_model_when_the_tuned_one_is_worse(sample_chunks, tmp_path):
    from tasks.core.config import DEFAULT_MODEL, EncodeConfig
    from tasks.encoders.model import resolve_model_path
    from tasks.finetune import torch_encoder
    from tasks.tuning.gate import rank_documents
    from tasks.tuning.train import train_model, training_dataset

    cfg = FinetuneConfig(enabled=True, batch_size=8, max_steps=4, learning_rate=1e-3,
                         max_seq_length=48, negatives="none")
    train, held = split_documents(sample_chunks.column("doc_id").to_pylist(), 0.2, 0)
    pairs = mine_pairs(sample_chunks, train, MiningSettings(("cloze",), 0.0, 64, 0))
    rng = np.random.default_rng(0)  # shuffled positives: pairs that teach nonsense
    shuffled = pairs.set_column(1, "positive", pairs["positive"].take(
        rng.permutation(pairs.num_rows)))
    result = train_model(resolve_model_path(DEFAULT_MODEL), training_dataset(
        shuffled, None, ("", "")), cfg, "cpu", tmp_path / "bad")
    assert result.steps == 4 and result.losses
    gate = gate_set(sample_chunks, held, 400, 200, 0)
    enc = EncodeConfig(device="cpu", batch_size=64)
    base = rank_documents(torch_encoder(resolve_model_path(DEFAULT_MODEL), enc, "cpu"), gate)
    worse = rank_documents(torch_encoder(tmp_path / "bad", enc, "cpu"), gate)
    defaults = FinetuneConfig()
    decision = decide(gate, base, worse, defaults.gate_metric, defaults.min_gain,
                      defaults.gate_confidence, seed=0)
    assert decision["use"] == "base" and decision["n"] >= 40 and decision["mean_gain"] < 0
    assert "not above min_gain" in decision["reason"]


def test_the_time_guard_names_the_keys_and_the_eta():
    from tasks.tuning.train import too_slow

    cfg = FinetuneConfig(enabled=True, max_minutes=10)
    assert too_slow(cfg, done=3, planned=300, elapsed=6.0, pace=2.0) is None  # 10 min: fits
    why = too_slow(cfg, done=3, planned=300, elapsed=9.0, pace=3.0)
    assert why is not None and "300 steps would take about 15.0 minutes" in why
    assert "finetune.max_minutes 10" in why and "finetune.max_steps (about 200 fit)" in why


def test_the_tuned_models_identity_leaves_out_the_time_guard():
    from tasks.core.config import EncodeConfig
    from tasks.finetune import tuned_identity

    def identity(**changed):
        return tuned_identity(EncodeConfig(), Path("model-x"), {"files_sha256": "b"}, "p",
                              FinetuneConfig(enabled=True, **changed))

    assert identity(max_minutes=3.0) == identity()  # the model fingerprint stays
    assert identity(max_steps=7) != identity()


class StepClock:
    """A clock that moves `step_s` seconds each time it is read (the guard reads it at the
    start and after each step), and makes each read take `sleep_s` of real time."""

    def __init__(self, step_s: float, sleep_s: float = 0.0) -> None:
        self.now, self.step_s, self.sleep_s = 0.0, step_s, sleep_s

    def __call__(self) -> float:
        import time

        time.sleep(self.sleep_s)
        self.now += self.step_s
        return self.now


@pytest.mark.slow
def test_the_clock_never_decides_the_model(sample_chunks, tmp_path):
    """Identical model bytes from an idle run and from a run on a 'loaded machine' (each
    step takes a second longer and reads a minute on the clock): the steps alone decide the
    model. A training whose first steps say it will not fit max_minutes fails, and no model
    is written."""
    import filecmp

    from tasks.core.config import DEFAULT_MODEL
    from tasks.encoders.model import resolve_model_path
    from tasks.tuning.train import TrainingTooSlow, train_model, training_dataset

    train, _ = split_documents(sample_chunks.column("doc_id").to_pylist(), 0.2, 0)
    data = training_dataset(mine_pairs(sample_chunks, train, MiningSettings(
        ("cloze",), 0.0, 32, 0)), None, ("", ""))
    cfg = FinetuneConfig(enabled=True, batch_size=8, max_steps=3, max_seq_length=32,
                         max_minutes=5, learning_rate=1e-4)
    base = resolve_model_path(DEFAULT_MODEL)
    idle = train_model(base, data, cfg, "cpu", tmp_path / "idle")
    loaded = train_model(base, data, cfg, "cpu", tmp_path / "loaded", StepClock(60.0, 1.0))
    assert idle.steps == loaded.steps == 3 and loaded.seconds > idle.seconds
    files = sorted(p.name for p in (tmp_path / "idle").iterdir() if p.is_file())
    assert "model.safetensors" in files and "README.md" not in files  # no timed model card
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "idle", tmp_path / "loaded", files,
                                               shallow=False)
    assert not mismatch and not errors and match == files
    slow = cfg.model_copy(update={"max_steps": 30, "max_minutes": 3.0})  # 4 steps planned
    with pytest.raises(TrainingTooSlow, match=r"4 steps would take about 4\.0 minutes.*"
                       r"finetune\.max_minutes 3; no model was written"):
        train_model(base, data, slow, "cpu", tmp_path / "refused", StepClock(60.0))
    assert not (tmp_path / "refused").exists()


@pytest.fixture(scope="module")
def tuned_workspace(sample_run, tmp_path_factory):
    """The whole pipeline on the sample with a (briefly) tuned model forced through the gate
    (min_gain -1), published to a folder. Ingest, clean and chunk read none of the settings
    below: the shared sample run's outputs are theirs."""
    from tasks.core.params_file import write_overrides
    from tasks.core.registry import STAGE_NAMES

    ws = copy_workspace(sample_run, tmp_path_factory.mktemp("tuned") / "ws", through="chunk")
    write_overrides(ws / "params.yaml", {
        "finetune.enabled": True, "finetune.max_steps": 2, "finetune.batch_size": 8,
        "finetune.max_seq_length": 48, "finetune.min_gain": -1.0, "finetune.gate_queries": 20,
        "finetune.gate_chunks": 100, "publish.target": "published",
        "evaluate.plot_sample": 50, "evaluate.health_sample": 50})  # the tuned model is tested
    run_stages(ws, STAGE_NAMES[STAGE_NAMES.index("finetune"):])
    return ws


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the module's pipeline run (training included) is set up here
def test_a_tuned_model_is_served_end_to_end(tuned_workspace):
    from flows.artifacts import summary_markdown
    from tasks.core.config import DEFAULT_MODEL, load_params

    ws = tuned_workspace
    choice = json.loads((ws / "data/03_finetune/model.json").read_text())
    assert choice["use"] == "tuned"
    folder = choice["tuned"]["folder"]
    model = json.loads((ws / "data/07_index/model.json").read_text())
    assert model["name"].endswith("+finetune") and model["tuned"]["folder"] == folder
    assert (ws / "data/07_index" / folder / "modules.json").is_file()
    encode = json.loads((ws / "data/04_encode/_manifest.json").read_text())
    assert encode["model"]["fingerprint"] == model["fingerprint"]
    assert encode["model"]["tuned"]["base_files_sha256"] == choice["base"]["files_sha256"]
    pointer = json.loads((ws / "published/CURRENT").read_text())
    assert pointer["model"] == model["name"]
    assert pointer["model_fingerprint"] == model["fingerprint"]
    published = sorted((ws / "published").glob("index-*"))
    for index in (ws / "data/07_index", published[-1]):
        done = subprocess.run(
            [str(Path(sys.executable).parent / "embedpipe"), "--root", str(ws), "search",
             "how a collapsed star becomes a neutron star", "--index", str(index), "-k", "3",
             "--format", "jsonl", "--mode", "dense"],
            env=env_with_venv(), capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr
        hits = json.loads(done.stdout)
        assert hits[0]["source"].startswith("astronomy/")
    metrics = json.loads((ws / "data/08_evaluate/metrics.json").read_text())
    compared = metrics["base_vs_tuned"]  # base and tuned side by side where users look
    assert compared["base_model"] == DEFAULT_MODEL and compared["tuned_model"] == model["name"]
    assert compared["queries"] == metrics["probe_queries"] and compared["chunks"] > 100
    for side in ("base", "tuned"):
        assert 0 < compared[side]["recall_at_10"] <= 1
    assert compared["gain"]["ndcg_at_10"] == pytest.approx(
        compared["tuned"]["ndcg_at_10"] - compared["base"]["ndcg_at_10"], abs=1e-5)
    summary = summary_markdown(ws, load_params(ws / "params.yaml"),
                               {"stages": [], "overrides": {}})
    assert "## Base vs fine-tuned model" in summary and model["name"] in summary
    beir = compared["labeled"]["finance/corpus.jsonl"]  # the sample's BEIR set, both models
    assert beir["queries"] == 15 and 0 < beir["tuned"]["ndcg_at_10"] <= 1
    assert beir["gain"]["recall_at_10"] == pytest.approx(
        beir["tuned"]["recall_at_10"] - beir["base"]["recall_at_10"], abs=1e-5)
    assert "BEIR `finance/corpus.jsonl`: 15 labelled queries." in summary
    lineage = subprocess.run([str(Path(sys.executable).parent / "embedpipe"), "--root",
                              str(ws), "lineage"], env=env_with_venv(), capture_output=True,
                             text=True, timeout=300, check=True).stdout
    assert "2 steps on pairs" in lineage and "+finetune" in lineage


@pytest.mark.slow
def test_search_refuses_an_index_whose_tuned_model_is_missing(tuned_workspace, tmp_path):
    import shutil

    from tasks.query.search import load_index_folder

    copy = tmp_path / "index"
    shutil.copytree(tuned_workspace / "data/07_index", copy)
    folder = json.loads((copy / "model.json").read_text())["tuned"]["folder"]
    shutil.rmtree(copy / folder)
    with pytest.raises(ValueError, match="tuned model .* is not here"):
        load_index_folder(copy).encode_queries(["a query"])


@pytest.mark.slow
def test_onnx_int8_export_and_its_torch_check_work_on_the_tuned_model(tuned_workspace):
    from tasks.core.config import EncodeConfig
    from tasks.encoders.loading import encoder_for
    from tasks.encoders.tuned import chosen_model

    cfg, tuned = chosen_model(EncodeConfig(device="cpu", backend="onnx", precision="int8"),
                              tuned_workspace / "data/03_finetune")
    assert tuned is not None
    x = encoder_for(cfg).encode(["a neutron star"], normalize_embeddings=True)
    assert x.shape == (1, 384) and abs(float(np.linalg.norm(x)) - 1) < 1e-3


def test_base_and_tuned_are_compared_on_the_probes_documents_and_a_seeded_sample():
    from tasks.evaluation.base_vs_tuned import compared_chunks

    chunks = chunk_table({f"d{i}": [f"text {i}.{j}" for j in range(3)] for i in range(20)})
    picked = compared_chunks(chunks, {"d3", "d7"}, limit=10, seed=0)
    docs = picked.column("doc_id").to_pylist()
    assert picked.num_rows == 10 and docs.count("d3") == docs.count("d7") == 3
    assert picked.column("chunk_id").to_pylist() == sorted(
        picked.column("chunk_id").to_pylist(), key=lambda c: chunks.column(
            "chunk_id").to_pylist().index(c))  # corpus order
    assert compared_chunks(chunks, {"d3"}, 10, 0).equals(compared_chunks(chunks, {"d3"}, 10, 0))
    assert compared_chunks(chunks, {"d3"}, 1, 0).num_rows == 3  # the probes' chunks, always


def test_churn_counts_added_changed_and_removed_texts():
    from tasks.tuning.reuse import churn

    before = {"a", "b", "c", "d"}
    assert churn(before, before) == 0.0
    assert churn(before, {"a", "b", "c", "d", "e"}) == 0.25  # one added
    assert churn(before, {"a", "b", "c", "x"}) == 0.5  # one changed: removed and added


@pytest.mark.slow
def test_a_new_document_keeps_the_tuned_model_and_encodes_only_its_chunks(tuned_workspace):
    """Runs last: it adds a document to the module's workspace."""
    ws = tuned_workspace
    card = json.loads((ws / "data/03_finetune/card.json").read_text())
    (ws / "data/sample/astronomy/pulsar-timing.txt").write_text(
        "Pulsar Timing\n\nMillisecond pulsars spin hundreds of times a second with a "
        "stability that rivals atomic clocks. Timing arrays watch dozens of them for the "
        "slow stretching of spacetime by passing gravitational waves.\n")
    run_stages(ws, ["ingest", "clean", "chunk", "finetune", "encode"])
    again = json.loads((ws / "data/03_finetune/card.json").read_text())
    assert 0 < again["kept"]["churn"] <= 0.2
    assert again["tuned"]["folder"] == card["tuned"]["folder"] and again["steps"] == 2
    encode = json.loads((ws / "data/04_encode/_manifest.json").read_text())
    assert 1 <= encode["rows"]["encoded"] <= 2 and encode["rows"]["reused"] > 400


def test_beir_pairs_train_on_training_documents_and_gate_on_held_out_ones(tmp_path):
    from tasks.documents.decoding import make_doc_id
    from tasks.tuning.user_pairs import read_user_pairs

    beir = tmp_path / "src/beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("")  # ingested earlier; only its path names the docs
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "castles of wales"}\n'
                                        '{"_id": "q2", "text": "tidal locking"}\n')
    (beir / "qrels/train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    d1, d2 = make_doc_id("beir/corpus.jsonl", "d1"), make_doc_id("beir/corpus.jsonl", "d2")
    chunks = chunk_table({d1: [CASTLES], d2: [ORBITS]})
    pairs, labeled = read_user_pairs(beir, tmp_path / "src", chunks, {d2}, 0.2, 0)
    queries, qrels = labeled.queries, labeled.qrels
    assert pairs.to_pylist() == [{"anchor": "castles of wales", "positive": CASTLES,
                                  "kind": "labeled", "doc_id": d1, "chunk_id": f"{d1}:0"}]
    assert queries == {"q2": "tidal locking"} and qrels == {"q2": {d2: 1}}
    (beir / "qrels/train.tsv").unlink()
    (beir / "qrels/test.tsv").write_text("q1\td1\t1\n")  # evaluate's: never trained on
    with pytest.raises(ValueError, match="qrels/train.tsv or qrels/dev.tsv"):
        read_user_pairs(beir, tmp_path / "src", chunks, set(), 0.2, 0)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_compare_puts_the_base_and_a_tuned_model_side_by_side(sample_flow_run, prefect_api,
                                                               tmp_path):
    """`embedpipe compare` as a user runs it: the baseline reruns nothing, the fine-tune
    variant trains, re-encodes and names its model in its row."""
    from tasks.core.config import DEFAULT_MODEL

    ws = copy_workspace(sample_flow_run[0], tmp_path / "ws")
    tune = ("finetune.enabled=true,finetune.max_steps=2,finetune.batch_size=8,"
            "finetune.max_seq_length=48,finetune.min_gain=-1.0,finetune.gate_queries=20,"
            "finetune.gate_chunks=100")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "embedpipe"), "--root", str(ws), "compare",
         "--variant", tune], env=env_with_venv() | {"PREFECT_API_URL": prefect_api},
        capture_output=True, text=True, timeout=1700, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [dict(zip(head, (c.strip() for c in ln.strip("|").split("|")), strict=True))
            for ln in lines[2:]]
    base, tuned = rows
    assert base["variant"] == "baseline" and base["stages_run"] == "-"
    assert base["model"] == DEFAULT_MODEL and tuned["model"] == f"{DEFAULT_MODEL}+finetune"
    ran = tuned["stages_run"].split(",")
    assert ran[:2] == ["finetune", "encode"] and "ingest" not in ran and "evaluate" in ran
    assert tuned["variant"].startswith("finetune.enabled=True")
    for row in rows:  # the dense side of each model on the same probes
        assert 0 < float(row["dense_probe_recall_at_10"]) <= 1
    # nothing of the user's workspace changed: each variant ran in a scratch copy
    assert json.loads((ws / "data/03_finetune/model.json").read_text())["use"] == "base"
