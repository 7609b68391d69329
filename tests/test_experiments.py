"""DVC's own way to compare runs: `dvc exp run -S`, then `dvc exp show`, `dvc metrics diff`
and `dvc plots diff` across experiments. metrics.json is tracked by git (DVC keeps it out of
its cache), so an experiment's commit holds it."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.workspace import env_with_venv, make_workspace


def dvc(ws, *args: str) -> str:
    done = subprocess.run(["dvc", *args], cwd=ws, env=env_with_venv(), capture_output=True,
                          text=True, timeout=900, check=False)
    assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-3000:])
    return done.stdout


def git(ws, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=ws,
                   check=True, capture_output=True)


@pytest.mark.slow
def test_dvc_experiments_show_metrics_and_plots(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    shutil.rmtree(ws / "data/sample")  # a small corpus: the point is DVC's bookkeeping
    shutil.copytree(make_workspace(tmp_path / "full") / "data/sample/astronomy",
                    ws / "data/sample/astronomy")
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "workspace")
    dvc(ws, "exp", "run", "-q")
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "baseline")
    dvc(ws, "exp", "run", "-q", "-S", "chunk.max_tokens=64", "-n", "short-chunks")
    rows = json.loads(dvc(ws, "exp", "show", "--json"))
    exp = next(e for r in rows for e in (r.get("experiments") or [])
               if e.get("name") == "short-chunks")
    metrics = exp["revs"][0]["data"]["metrics"]["metrics.json"]["data"]
    base = rows[-1]["data"]["metrics"]["metrics.json"]["data"]
    assert metrics["dedup"]["in"] > base["dedup"]["in"] > 0  # shorter chunks: more of them
    assert "!" not in dvc(ws, "exp", "show", "--md", "--no-pager")
    diff = json.loads(dvc(ws, "metrics", "diff", "HEAD", "short-chunks", "--json"))
    assert diff["metrics.json"]["dedup.in"]["diff"] > 0
    plots = json.loads(dvc(ws, "plots", "diff", "HEAD", "short-chunks", "--json",
                           "-o", str(tmp_path / "plots")))
    revisions = {r for images in plots["data"].values() for i in images for r in i["revisions"]}
    assert revisions == {"HEAD", "short-chunks"}
