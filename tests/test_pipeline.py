"""The whole flow on data/sample with the real packaged model, real Prefect, real DVC."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tasks.core.registry import STAGE_NAMES
from tests.workspace import copy_workspace, env_with_venv, fingerprints, make_workspace

TOPICS = {
    "how a collapsed star becomes a neutron star": "astronomy/",
    "keeping a sourdough starter alive and fed": "baking/",
    "blight on tomato leaves in the vegetable garden": "gardening/",
    "shortest path through a weighted graph": "code/",
    "corals expelling algae when the ocean warms": "marine/",
    "besieging a castle with trebuchets": "history/",
    "saving for retirement with tax advantages": "finance/",
    "pyroclastic flows from an explosive eruption": "volcanoes/",
}


def dvc(ws: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["dvc", *args], cwd=ws, env=env_with_venv(), capture_output=True,
                          text=True, check=False, timeout=900)


@pytest.fixture(scope="module")
def flow_ws(sample_flow_run, tmp_path_factory):
    """A copy of the session's flow run on the sample, with that first run's summary."""
    ws, summary = sample_flow_run
    return copy_workspace(ws, tmp_path_factory.mktemp("flow") / "ws"), summary


def test_first_run_runs_every_stage(flow_ws):
    ws, summary = flow_ws
    assert [s["stage"] for s in summary["stages"] if s["ran"]] == [
        "ingest", "clean", "chunk", "finetune", "encode", "reduce", "dedup", "index", "evaluate",
        "publish", "export"]
    rows = {s["stage"]: s["rows"] for s in summary["stages"]}
    assert rows["ingest"]["rejects"] >= 6  # the planted bad files
    assert rows["dedup"]["exact"] >= 3 and rows["dedup"]["near"] >= 3
    metrics = json.loads((ws / "metrics.json").read_text())
    assert metrics["index_recall_at_10_queries"] >= 0.95 and metrics["gate"]["passed"]
    assert metrics["probe_ndcg_at_10"] >= 0.8 and metrics["labeled_ndcg_at_10"] >= 0.6


def test_dvc_metrics_and_plots_show(flow_ws):
    ws, _ = flow_ws
    proc = dvc(ws, "metrics", "show", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "probe_ndcg_at_10" in proc.stdout
    proc = dvc(ws, "plots", "show", "-o", "plots_html")
    assert proc.returncode == 0, proc.stderr
    html = (ws / "plots_html" / "index.html").read_text()
    assert "map.png" in html or "static" in html


def test_every_input_document_accounted_for(flow_ws):
    import pyarrow.parquet as pq

    ws, _ = flow_ws
    docs = pq.read_table(ws / "data/01_ingest/docs.parquet")
    rejects = pq.read_table(ws / "data/01_ingest/rejects.parquet")
    files = [p for p in (ws / "data/sample").rglob("*") if p.is_file()
             and p.name != "queries.jsonl" and "qrels" not in p.parts]
    sources = set(docs.column("source").to_pylist()) | set(rejects.column("source").to_pylist())
    assert {p.relative_to(ws / "data/sample").as_posix() for p in files} == sources


def test_topic_queries_return_their_topic_first(flow_ws):
    from tasks.query.search import load_index_folder

    ws, _ = flow_ws
    folder = load_index_folder(ws / "data/07_index")
    results = folder.search_text(list(TOPICS), k=3)
    for (query, topic), hits in zip(TOPICS.items(), results, strict=True):
        assert hits[0]["source"].startswith(topic), (query, [h["source"] for h in hits])


def test_dvc_repro_in_a_fresh_copy_gives_same_fingerprints(flow_ws, tmp_path):
    ws, _ = flow_ws
    other = make_workspace(tmp_path / "repro_ws")
    proc = dvc(other, "repro")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert fingerprints(other) == fingerprints(ws)
    assert len(fingerprints(ws)) == len(STAGE_NAMES)


def test_second_run_skips_everything_and_dvc_agrees(flow_ws):
    from flows.pipeline import pipeline

    ws, _ = flow_ws
    summary = pipeline(root=str(ws))
    assert not any(s["ran"] for s in summary["stages"])
    proc = dvc(ws, "repro")
    assert proc.returncode == 0 and "Running stage" not in proc.stdout, proc.stdout


def test_reduce_param_change_reruns_exactly_downstream(flow_ws):
    from flows.pipeline import pipeline
    from tasks.core.config import load_params

    ws, _ = flow_ws
    before = fingerprints(ws)
    summary = pipeline(root=str(ws), overrides={"reduce": {"pca_dims": 64}})
    ran = [s["stage"] for s in summary["stages"] if s["ran"]]
    assert ran == ["reduce", "dedup", "index", "evaluate", "publish", "export"]
    assert load_params(ws / "params.yaml").reduce.pca_dims == 64  # DVC sees what ran
    after = fingerprints(ws)
    assert {k for k in after if after[k] != before[k]} == set(ran)
    proc = dvc(ws, "repro")
    assert "Running stage" not in proc.stdout, proc.stdout


def test_runs_diff_shows_the_param_change(flow_ws, capsys):
    from flows.cli import main

    ws, _ = flow_ws
    capsys.readouterr()
    assert main(["--root", str(ws), "runs", "diff", "1", "2"]) == 0
    out = capsys.readouterr().out
    assert "param   reduce.pca_dims: None -> 64" in out and "stage   reduce:" in out


def test_invalid_override_fails_before_any_stage(flow_ws):
    from flows.pipeline import pipeline

    ws, _ = flow_ws
    params_before = (ws / "params.yaml").read_text()
    state = pipeline(root=str(ws), set_params={"reduce.pca_dims": 999}, return_state=True)
    assert state.is_failed()  # one line, the run Failed before any stage
    assert "settings: reduce.pca_dims: 999 exceeds the model's dimension" in state.message
    with pytest.raises(Exception, match=r"reduce\.pca_dims"):
        pipeline(root=str(ws), overrides={"reduce": {"pca_dims": 0}})
    assert (ws / "params.yaml").read_text() == params_before


def test_two_runs_and_a_dvc_repro_at_once_take_turns(flow_ws, tmp_path):
    """`embedpipe run` twice and `dvc --wait-for-lock repro` started together on one
    workspace: all succeed, serialised by DVC's repository lock and the workspace lock, and
    the outputs are those of one run."""
    import os
    import sys

    ws = make_workspace(tmp_path / "ws")
    env = env_with_venv()
    env.pop("PREFECT_API_URL", None)  # each run its own temporary Prefect server
    embedpipe = str(Path(sys.executable).parent / "embedpipe")
    homes = [tmp_path / f"prefect-{i}" for i in range(3)]  # and its own database
    procs = [subprocess.Popen(cmd, cwd=ws, env=env | {"PREFECT_HOME": str(home)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for cmd, home in zip(([embedpipe, "run"], ["dvc", "--wait-for-lock", "repro"],
                                   [embedpipe, "run"]), homes, strict=True)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(o[-2000:] for o in outs)
    one_run = {s["stage"]: s["fingerprint"] for s in flow_ws[1]["stages"]}  # before others
    assert fingerprints(ws) == one_run                                      # touched flow_ws
    assert "up to date" in dvc(ws, "status").stdout
    assert not [p for p in os.listdir(ws / "data") if p.startswith(".")]
