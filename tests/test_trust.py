"""The rows of issue 29 this side covers, each as a new user or an operator met them: a
fingerprint names exactly one content, outputs depend on inputs, params and code only, every
read is checked, published folders are named and checked by content."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.core.params_file import write_overrides
from tests.conftest import make_workspace, run_stages, stage_outputs

UP_TO_DEDUP = ("ingest", "clean", "chunk", "encode", "reduce", "dedup")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The sample run up to dedup, once for the module."""
    ws = make_workspace(tmp_path_factory.mktemp("trust") / "ws")
    run_stages(ws, UP_TO_DEDUP)
    return ws


@pytest.fixture
def ws(built, tmp_path) -> Path:
    """A copy of the built workspace each test may change."""
    return Path(shutil.copytree(built, tmp_path / "ws", symlinks=True))


def manifest(ws: Path, folder: str) -> dict:
    return json.loads((ws / "data" / folder / "_manifest.json").read_text())


def test_search_settings_change_the_index_and_the_published_version(ws):
    """Row 1: `--set search.mode=dense --set search.rrf_k=5` after a run reran index under
    the same fingerprint, publish kept the old folder and search stayed hybrid, rrf_k 60."""
    from tasks.query.search import load_index_folder
    from tasks.storage.published import current_index

    run_stages(ws, ("index", "evaluate", "publish"))
    first = manifest(ws, "07_index")["fingerprint"]
    write_overrides(ws / "params.yaml", {"search.mode": "dense", "search.rrf_k": 5})
    run_stages(ws, ("index", "evaluate", "publish"))
    assert manifest(ws, "07_index")["fingerprint"] != first
    folder = load_index_folder(current_index(ws / "published"))
    assert (folder.search.mode, folder.search.rrf_k) == ("dense", 5)
    assert len([p for p in (ws / "published").iterdir() if p.is_dir()]) == 2


def _busy(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def test_loaded_machine_builds_the_same_index_bytes(ws, monkeypatch):
    """Row 2: `index.factory: auto` timed a query and built IVF under load, Flat when idle,
    under one fingerprint. Now: busy CPU threads and a clock a thousand times slower (a far
    slower machine) give the same index folder, byte for byte (timings reported aside)."""
    run_stages(ws, ("index",))
    idle = stage_outputs(ws / "data")["index"]
    shutil.rmtree(ws / "data/07_index")  # a fresh build, not an update of the first
    hogs = _busy(4)
    real = time.perf_counter
    started = real()
    monkeypatch.setattr(time, "perf_counter", lambda: started + 1000 * (real() - started))
    try:
        run_stages(ws, ("index",))
    finally:
        monkeypatch.undo()
        for p in hogs:
            p.kill()
            p.wait()
    loaded = stage_outputs(ws / "data")["index"]
    assert loaded == idle
    assert loaded["card.json"]["factory"] == "Flat"
