"""Params that name places: checked against the workspace before anything is written, and a
run that fails before its first stage leaves params.yaml byte-for-byte as it was."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flows.cli import main
from tasks.core.config import load_params
from tasks.core.params_file import provisional_overrides
from tasks.storage.locations import location_problems
from tests.conftest import make_workspace


def _problems(ws: Path, **dotted: object) -> list[str]:
    overrides = {k.replace("__", "."): v for k, v in dotted.items()}
    return location_problems(load_params(ws / "params.yaml", overrides), ws)


def test_missing_source_and_escaping_targets_are_named(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    assert _problems(ws) == []
    assert _problems(ws, ingest__source=str(tmp_path)) == []  # absolute and there
    assert _problems(ws, publish__target=str(tmp_path / "elsewhere")) == []  # absolute
    assert _problems(ws, publish__target="sub/../published") == []
    assert _problems(ws, ingest__source="s3://bucket/docs", publish__target="s3://b/p") == []
    [missing] = _problems(ws, ingest__source="/nonexistent")
    assert "ingest.source: '/nonexistent' does not exist" in missing
    [not_folder] = _problems(ws, ingest__source="params.yaml")
    assert "is not a folder (relative to the workspace" in not_folder
    problems = _problems(
        ws,
        publish__target="../../outside",
        paths__data="../data",
        export__lancedb__uri="stores/../../lance",
    )
    assert [p.split(":")[0] for p in problems] == [
        "paths.data",
        "publish.target",
        "export.lancedb.uri",
    ]
    assert all("leads outside the workspace" in p for p in problems)


def test_run_with_bad_set_fails_first_and_leaves_params_yaml(tmp_path, capsys):
    """On main, `--set ingest.source=/nonexistent` failed at ingest with the value already
    written, and `publish.target=../../outside` was accepted."""
    ws = make_workspace(tmp_path / "ws")
    before = (ws / "params.yaml").read_bytes()
    for bad in ("ingest.source=/nonexistent", "publish.target=../../outside"):
        assert main(["--root", str(ws), "run", "--set", bad]) == 2
        assert bad.split("=")[0] in capsys.readouterr().err
        assert (ws / "params.yaml").read_bytes() == before
    assert not (ws / "data" / "01_ingest").exists()
    assert not (tmp_path.parent / "outside").exists()


def test_flow_with_bad_override_leaves_params_yaml(tmp_path, prefect_server):
    """The flow itself (the UI's way in) refuses the same values before it writes."""
    from flows.pipeline import pipeline

    ws = make_workspace(tmp_path / "ws")
    before = (ws / "params.yaml").read_bytes()
    # a settings error ends the flow run Failed with one line (no traceback), nothing written
    state = pipeline(root=str(ws), set_params={"ingest.source": "/nonexistent"},
                     return_state=True)
    assert state.is_failed()
    assert re.search(r"^settings: ingest\.source: '/nonexistent' does not exist", state.message)
    state = pipeline(root=str(ws), overrides={"publish": {"target": "../x"}}, return_state=True)
    assert state.is_failed()
    assert re.search(r"^settings: publish\.target: '\.\./x' leads outside", state.message)
    assert (ws / "params.yaml").read_bytes() == before


def test_overrides_are_put_back_when_the_run_fails_before_a_stage(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"reduce:\n  pca_dims: null   # keep\n")
    before = path.read_bytes()
    with (
        pytest.raises(RuntimeError, match="dvc status failed"),
        provisional_overrides(path, {"reduce.pca_dims": 64}),
    ):
        assert b"pca_dims: 64" in path.read_bytes()
        raise RuntimeError("dvc status failed")
    assert path.read_bytes() == before
    with pytest.raises(RuntimeError), provisional_overrides(path, {"reduce.pca_dims": 64}) as keep:
        keep()  # a stage started: the run's params stay, as dvc.lock will record them
        raise RuntimeError("the stage failed")
    assert b"pca_dims: 64" in path.read_bytes()
