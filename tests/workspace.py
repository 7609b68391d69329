"""Plain helpers the tests import: fresh workspaces, copies of built ones, running stages
in-process, servers' ports and health, scoped environment variables. Fixtures live in
conftest.py (`sample_run`: the sample corpus built once per session)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKSPACE_FILES = ("params.yaml", "dvc.yaml", "tasks", "flows", "data/sample", ".dvc/config",
                   ".dvc/.gitignore", ".gitignore", ".dvcignore")
# The embeddings server the openai-backend tests run (conftest's `embeddings_server`).
INFINITY_VENV = REPO / ".venv-infinity"
SERVED_MODEL = "minilm"
API_KEY_ENV = "EMBEDPIPE_TEST_API_KEY"
API_KEY = "sk-embedpipe-FAKE-api-key-5e2b7c91"  # recognisable: searched for in every output


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


def later_outputs(ws: Path, through: str) -> list[Path]:
    """What the stages after `through` wrote in the workspace `ws`: their folders, their extra
    outs (as `dvc.yaml` lists them), evaluate's metrics file and run registry, publish's
    local target. Removing them leaves what a run that stopped after `through` leaves."""
    from tasks.core.catalog import METRICS
    from tasks.core.config import load_params
    from tasks.core.registry import STAGE_NAMES, STAGES

    params = load_params(ws / "params.yaml")
    later = STAGES[STAGE_NAMES.index(through) + 1:]
    found = [s.out_dir(params, ws) for s in later]
    found += [ws / o.replace("${paths.vector_cache}", params.paths.vector_cache)
              for s in later for o in s.extra_outs]
    if METRICS.stage in {s.name for s in later}:
        found += [ws / METRICS.name, ws / params.paths.runs]
    if "publish" in {s.name for s in later} and "://" not in params.publish.target:
        found.append(ws / params.publish.target)
    return [p for p in found if p.exists() and p.resolve().is_relative_to(ws.resolve())]


def _paths_into(ws: Path) -> list[str]:
    """The params of `ws` that name a place inside it by an absolute path (a copy of the
    workspace would go on using the original's)."""
    from tasks.core.config import load_params

    params = load_params(ws / "params.yaml")
    places = {"ingest.source": params.ingest.source, "publish.target": params.publish.target,
              **{f"paths.{k}": v for k, v in params.paths.model_dump().items()}}
    return [f"{key}: {value}" for key, value in places.items()
            if Path(value).is_absolute() and Path(value).resolve().is_relative_to(ws.resolve())]


def copy_workspace(src: Path, dest: Path, through: str | None = None) -> Path:
    """A copy of the built workspace `src` at `dest` (a copy of the sample run costs a
    fraction of a second, its build a minute), optionally as it stood after stage `through`.

    Everything in a workspace is relative to its root (params, dvc.lock, DVC's cache and
    config, the run registry), so the copy works in place of the original; only publish's
    receipt still names the original's target, as a record (nothing reads it back).
    ValueError when a param names a place inside `src` by an absolute path.
    """
    if absolute := _paths_into(src):
        raise ValueError(f"{src / 'params.yaml'}: {'; '.join(absolute)} would still point "
                         "into the original once copied; give it relative to the workspace")
    shutil.copytree(src, dest, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    for path in later_outputs(dest, through) if through else ():
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        parent = path.parent
        while parent != dest and not any(parent.iterdir()):  # runs/, data/cache/
            parent.rmdir()
            parent = parent.parent
    return dest


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


def stop_kept_servers(under: Path) -> list[dict]:
    """Stop every temporary Prefect server an `embedpipe run` kept (`run.server_idle_s`)
    for a PREFECT_HOME under `under`: their records."""
    from flows.kept_server import stop

    return [r for record in sorted(under.rglob("embedpipe-server/server.json"))
            if (r := stop(record.parent)) is not None]
