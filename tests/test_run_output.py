"""What a person running `embedpipe run` off a terminal reads: one line per stage start (why,
in short) and end (counts, seconds), progress every tenth, nothing doubled or malformed; and
params.yaml after `--set`, changed on the overridden line only."""

from __future__ import annotations

import difflib
import re
import subprocess
import sys
from pathlib import Path

from flows.dvc_bridge import explain_stale
from tasks.core.registry import STAGE_NAMES
from tests.workspace import env_with_venv, make_workspace


def test_log_is_one_line_per_stage_start_and_end_and_set_edits_one_line(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    before = (ws / "params.yaml").read_text()
    env = env_with_venv()
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run([str(Path(sys.executable).parent / "embedpipe"), "run", "--set",
                           "reduce.pca_dims=64"], cwd=ws, env=env, capture_output=True,
                          text=True, timeout=900, check=False)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    lines = log.splitlines()
    for stage in STAGE_NAMES:
        starts = [line for line in lines if re.search(rf"\b{stage}: running \(", line)]
        ends = [line for line in lines if re.search(rf"\b{stage}: .* in \d+\.\d s$", line)]
        assert len(starts) == 1 and len(starts[0]) < 240, (stage, starts)
        assert starts[0].endswith("running (never run)"), starts  # a fresh clone says so
        assert len(ends) == 1, (stage, ends)
    assert "Finished in state" not in log and "None=None" not in log
    assert "DEBUG" not in log and "bm25s" not in log  # libraries' own chatter
    progress = [line for line in lines if re.search(r": [\d,]+ / [\d,]+ \w+ \(\d+%\)", line)]
    assert len(progress) == len(set(progress))  # no line twice
    diff = [line for line in difflib.unified_diff(before.splitlines(),
                                                  (ws / "params.yaml").read_text().splitlines(),
                                                  lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert diff == ["-  pca_dims: null              # e.g. 128; null keeps the model's dimension",
                    "+  pca_dims: 64                # e.g. 128; null keeps the model's dimension"]


def test_why_it_runs_names_the_keys_with_old_and_new_values(tmp_path):
    (tmp_path / "params.yaml").write_text(
        "dedup:\n  threshold: 0.9  # edited by hand\n  near: true\nindex:\n  nlist: auto\n")
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  dedup:\n    cmd: python -m tasks.dedup\n    params:\n"
        "      params.yaml:\n        dedup:\n          threshold: 0.95\n          near: true\n")
    changes = [{"changed deps": {"params.yaml": {"dedup": "modified"},
                                 "tasks/dedup.py": "modified"}}]
    short, full = explain_stale(tmp_path, "dedup", changes)
    assert short == "deps: 1 modified (tasks/dedup.py); params: dedup.threshold 0.95 → 0.9"
    assert full == "changed deps: tasks/dedup.py modified; params: dedup.threshold 0.95 → 0.9"
    assert explain_stale(tmp_path, "index", changes) == (
        "never run", "never run (no entry in dvc.lock)")


def test_why_it_runs_reads_numbers_as_dvc_does(tmp_path):
    """DVC writes `2e-05` to dvc.lock (YAML 1.2: a number); params.yaml says `2.0e-05`. The
    same value: no params change is named (PyYAML read the first as a string)."""
    (tmp_path / "params.yaml").write_text("finetune:\n  learning_rate: 2.0e-05\n")
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  finetune:\n    cmd: python -m tasks.finetune\n"
        "    params:\n      params.yaml:\n        finetune:\n          learning_rate: 2e-05\n")
    changes = [{"changed deps": {"data/03_chunk": "modified"}}]
    assert explain_stale(tmp_path, "finetune", changes) == (
        "deps: 1 modified (data/03_chunk)", "changed deps: data/03_chunk modified")


def test_why_it_runs_names_a_changed_date(tmp_path):
    """A date in params (YAML reads it as a date) is named, not a crash."""
    (tmp_path / "params.yaml").write_text("dedup:\n  threshold: 2026-12-07\n")
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  dedup:\n    cmd: python -m tasks.dedup\n    params:\n"
        "      params.yaml:\n        dedup:\n          threshold: 2026-12-06\n")
    assert explain_stale(tmp_path, "dedup", [])[0] == (
        'params: dedup.threshold "2026-12-06" → "2026-12-07"')
