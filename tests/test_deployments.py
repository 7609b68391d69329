"""Deployments against a real Prefect server: serve, trigger with overrides, schedules,
artifacts, an invalid override, two runs at once, and a run killed during encode."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.workspace import env_with_venv, make_workspace

BIN = Path(sys.executable).parent


def cli_env(api: str) -> dict[str, str]:
    return env_with_venv() | {"PREFECT_API_URL": api}


@pytest.fixture(scope="module")
def served(prefect_api, tmp_path_factory):
    """`embedpipe serve` (the README's command) running for a fresh workspace."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    ws = make_workspace(tmp_path_factory.mktemp("served_ws"))
    log = open(ws.parent / "serve.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([str(BIN / "embedpipe"), "serve"], cwd=ws, env=cli_env(prefect_api),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    with temporary_settings({PREFECT_API_URL: prefect_api}):
        from prefect.client.orchestration import get_client

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with get_client(sync_client=True) as client:
                try:  # serve registers the two one after the other: wait for both
                    client.read_deployment_by_name("embedpipe/manual")
                    client.read_deployment_by_name("embedpipe/nightly")
                    break
                except Exception:  # not registered yet
                    time.sleep(1)
        yield ws, prefect_api
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)
    log.close()


def trigger(api: str, ws: Path, params: dict) -> subprocess.CompletedProcess:
    """The README's trigger command."""
    return subprocess.run(
        [str(BIN / "prefect"), "deployment", "run", "embedpipe/manual", "--params",
         json.dumps(params), "--watch"], cwd=ws, env=cli_env(api), capture_output=True,
        text=True, timeout=900, check=False)


def test_nightly_schedule_is_registered(served):
    from prefect.client.orchestration import get_client

    ws, _ = served
    with get_client(sync_client=True) as client:
        nightly = client.read_deployment_by_name("embedpipe/nightly")
        manual = client.read_deployment_by_name("embedpipe/manual")
    crons = [(s.schedule.cron, s.schedule.timezone) for s in nightly.schedules]
    assert crons == [("0 3 * * *", "UTC")]
    assert manual.schedules == [] and manual.parameters == {"root": str(ws.resolve())}
    props = manual.parameter_openapi_schema["properties"]
    assert "overrides" in props and manual.enforce_parameter_schema


def test_manual_run_with_overrides_completes_with_artifacts(served):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from tasks.core.config import load_params

    ws, api = served
    proc = trigger(api, ws, {"overrides": {"reduce": {"pca_dims": 48},
                                           "chunk": {"max_tokens": 160}}})
    assert "Completed" in proc.stdout, proc.stdout + proc.stderr
    assert load_params(ws / "params.yaml").reduce.pca_dims == 48
    reduce_m = json.loads((ws / "data/05_reduce/_manifest.json").read_text())
    chunk_m = json.loads((ws / "data/03_chunk/_manifest.json").read_text())
    assert reduce_m["config"]["pca_dims"] == 48 and chunk_m["config"]["max_tokens"] == 160
    assert json.loads((ws / "data/07_index/card.json").read_text())["d"] == 48
    with get_client(sync_client=True) as client:
        keys = ["embedpipe-summary", "embedpipe-stages", "embedpipe-encode-progress",
                "embedpipe-plots"]
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=keys)))
        ran = {t.name.rsplit("-", 1)[0] for t in client.read_task_runs()}
    assert {a.key for a in arts} == set(keys)
    assert {"chunk", "reduce", "index"} <= ran  # each stage a task run under its own name
    summary = next(a for a in arts if a.key == "embedpipe-summary" and str(ws) in a.data).data
    assert "reduce.pca_dims" in summary and "quality gate | passed" in summary


def test_schema_violation_refused_naming_the_field(served):
    ws, api = served
    before = (ws / "params.yaml").read_text()
    proc = trigger(api, ws, {"overrides": {"reduce": {"pca_dims": 0}}})
    assert "overrides.reduce.pca_dims" in proc.stdout + proc.stderr
    assert (ws / "params.yaml").read_text() == before


def test_impossible_override_ends_failed_before_any_stage(served):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    ws, _ = served
    before = (ws / "params.yaml").read_text()
    run = run_deployment("embedpipe/manual", timeout=300,
                         parameters={"overrides": {"reduce": {"pca_dims": 999}}})
    assert run.state.is_failed()
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    with get_client(sync_client=True) as client:  # this run's own (the API pages at 200)
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[run.id])))
        # the served process sends its logs in batches, after the Failed state on a busy
        # machine: wait for them (bounded) rather than read too early
        deadline, logs = time.monotonic() + 60, []
        while time.monotonic() < deadline:
            logs = client.read_logs(log_filter=LogFilter(
                flow_run_id=LogFilterFlowRunId(any_=[run.id])))
            if any("reduce.pca_dims: 999 exceeds" in entry.message for entry in logs):
                break
            time.sleep(1)
    assert not tasks and logs
    assert any("reduce.pca_dims: 999 exceeds" in entry.message for entry in logs)
    assert "reduce.pca_dims: 999 exceeds" in run.state.message
    assert not [e.message for e in logs if "Traceback" in e.message]  # one line, not pages
    assert (ws / "params.yaml").read_text() == before


def test_second_run_refused_or_waits_while_workspace_busy(served):
    from tasks.core.lock import workspace_lock

    ws, api = served
    env = cli_env(api)
    with workspace_lock(ws, "test holder", "fail"):
        proc = subprocess.run([str(BIN / "embedpipe"), "run", "--on-busy", "fail"], cwd=ws,
                              env=env, capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode != 0
        assert "is busy: held by pid" in proc.stdout + proc.stderr
        waiting = subprocess.Popen([str(BIN / "embedpipe"), "run", "--on-busy", "wait"], cwd=ws,
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)
        time.sleep(8)
        assert waiting.poll() is None  # still waiting for the lock
    out, _ = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, out
    assert "fresh    skipped" in out
    dvc_proc = subprocess.run(["dvc", "status"], cwd=ws, env=env, capture_output=True,
                              text=True, check=False)
    assert "up to date" in dvc_proc.stdout, dvc_proc.stdout


def test_killed_during_encode_then_resumes(prefect_api, tmp_path):
    ws = make_workspace(tmp_path / "kill_ws")
    env = cli_env(prefect_api)
    proc = subprocess.Popen([str(BIN / "embedpipe"), "run"], cwd=ws, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    # inside encode: its output folder is being written (model loaded, encoding), not done
    while time.monotonic() < deadline and not any((ws / "data").glob(".04_encode.tmp-*")):
        time.sleep(0.05)
    time.sleep(0.3)
    assert proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (ws / "data/04_encode").exists()  # nothing half-written is visible
    rerun = subprocess.run([str(BIN / "embedpipe"), "run"], cwd=ws, env=env,
                           capture_output=True, text=True, timeout=900, check=False)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    lines = {line.split()[0]: line.split()[1] for line in rerun.stdout.splitlines()
             if line.split() and line.split()[0] in ("ingest", "clean", "chunk", "encode")}
    assert lines == {"ingest": "fresh", "clean": "fresh", "chunk": "fresh", "encode": "ran"}
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_api}), get_client(
            sync_client=True) as client:
        states = [r.state.type.value for r in client.read_flow_runs()
                  if r.parameters.get("root") == str(ws)]
    assert "CRASHED" in states and "RUNNING" not in states  # the killed run, marked by the rerun


def test_run_form_follows_params_yaml(served):
    """An edit of params.yaml reaches the served form within seconds: its defaults are the
    file's values now, so a form submitted unchanged never restores old ones."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    ws, api = served
    path = ws / "params.yaml"
    before = path.read_text()
    assert "  plot_sample: 1000 " in before
    path.write_text(before.replace("  plot_sample: 1000 ", "  plot_sample: 999  "))
    try:
        deadline = time.monotonic() + 60
        default = None
        with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
            while time.monotonic() < deadline and default != 999:
                schema = client.read_deployment_by_name(
                    "embedpipe/manual").parameter_openapi_schema
                default = schema["definitions"]["EvaluateConfigOverride"]["properties"][
                    "plot_sample"]["default"]
                time.sleep(1)
        assert default == 999
    finally:
        path.write_text(before)
