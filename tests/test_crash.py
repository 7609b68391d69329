"""Kill -9 anywhere: SIGKILL `embedpipe run` and `dvc repro` at seeded points in every stage,
rerun, and get what an uninterrupted run gives.

The crash points (`tests/crash_points/sitecustomize.py`) are loaded into every Python process
of a run through PYTHONPATH: a table batch or file written into a stage's temporary folder,
a vector-cache shard written but not renamed, and a stage's folder renamed into place before
DVC records it. An uninterrupted run lists the points each stage passes; then one workspace
is killed once in every stage, in stage order, alternating the flow and `dvc repro` (each
attempt resumes what the previous one left), and a last `embedpipe run` finishes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.families import generate
from tasks.core.catalog import SOURCE_LISTING
from tasks.core.registry import STAGE_NAMES
from tests.workspace import REPO, env_with_venv, fingerprints, make_workspace

pytestmark = pytest.mark.slow
SEED = 1202
BIN = Path(sys.executable).parent
HOOKS = Path(__file__).parent / "crash_points"
COMMANDS = {"flow": [str(BIN / "embedpipe"), "run"], "repro": [str(BIN / "dvc"), "repro"]}
# what a JSON record says about how a run went, not what it made: timings, dates, the
# workspace path, vectors reused from the cache, an index updated in place (0 added, 0
# removed) rather than rebuilt, and the sha256 of such records; and the plot of query times
RUN_RECORD = re.compile(r"seconds|_ms|ms_per|utc|^update|factory_reason|^(encoded|reused)$|"
                        r"^(added|removed)$|^published$|^target$|\.json$")
TIMING_PLOT = "recall_vs_nprobe.png"


def corpus_workspace(dest: Path) -> Path:
    """The sample corpus plus ~200 generated documents (library families and filler); an
    IVF index named outright (its training and tuning are crash points too; `auto` would
    pick Flat for a corpus this small)."""
    ws = make_workspace(dest)
    params = ws / "params.yaml"
    params.write_text(params.read_text().replace("factory: auto ", 'factory: "IVF{nlist},Flat"'))
    scratch = dest.parent / f"{dest.name}-generated"
    generate(scratch, n_families=30, n_filler=100, sample_dir=ws / "data/sample", seed=SEED)
    shutil.move(scratch / "corpus", ws / "data/sample/generated")
    return ws


def run(ws: Path, runner: str, env: dict[str, str], at: str | None = None
        ) -> subprocess.CompletedProcess:
    env = env | ({"EMBEDPIPE_CRASH_AT": at} if at else {})
    return subprocess.run(COMMANDS[runner], cwd=ws, env=env, capture_output=True, text=True,
                          timeout=900, check=False, start_new_session=True)


def without_run_record(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: without_run_record(v) for k, v in obj.items() if not RUN_RECORD.search(k)}
    if isinstance(obj, list):
        return [without_run_record(v) for v in obj]
    return obj


def outputs(ws: Path) -> dict[str, Any]:
    """Every file the pipeline wrote (stage outputs, vector cache, published index): the
    sha256 of each data file, each JSON record without its run record."""
    out: dict[str, Any] = {}
    for top in ("data", "published"):
        for path in sorted((ws / top).rglob("*")):
            rel = path.relative_to(ws)
            if (not path.is_file() or rel.parts[1] == "sample"
                    or path.name in (TIMING_PLOT, SOURCE_LISTING)):  # the input's mtimes
                continue
            out[str(rel)] = (without_run_record(json.loads(path.read_text()))
                             if path.suffix == ".json" else
                             hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def without(files: dict[str, Any], prefixes: set[str]) -> dict[str, Any]:
    return {k: v for k, v in files.items() if not any(k.startswith(p) for p in prefixes)}


def result_entries(ws: Path) -> dict[tuple[str, str], str]:
    """(space folder, key) -> value of every result-cache row (tasks/core/result_cache.py),
    whichever shard holds it: two runs' histories shard the same results differently."""
    import pyarrow.parquet as pq

    out: dict[tuple[str, str], str] = {}
    for shard in sorted((ws / "data/cache/results").rglob("part-*.parquet")):
        space = str(shard.parent.relative_to(ws))
        table = pq.read_table(shard, columns=["key", "value"]).to_pylist()
        out.update({(space, r["key"]): r["value"] for r in table})
    return out


def leftovers(ws: Path) -> list[str]:
    """Temporary files or folders a killed writer could leave in the outputs or the cache."""
    return [str(p.relative_to(ws)) for p in (ws / "data").rglob(".*")
            if ".tmp-" in p.name or ".old-" in p.name]


def crash_plan(points: dict[str, list[str]], rng: random.Random) -> list[tuple[str, str, str]]:
    """(stage, runner, point) for every stage in order: runners alternate from a seeded start;
    one flow stage and one `dvc repro` stage are killed after their rename (before DVC records
    them), every other stage at a seeded write or cache point."""
    first = rng.randrange(2)
    runners = [("flow", "repro")[(i + first) % 2] for i in range(len(STAGE_NAMES))]
    renamed = {rng.choice([s for s, r in zip(STAGE_NAMES, runners, strict=True) if r == r_])
               for r_ in ("flow", "repro")}
    plan = []
    for stage, runner in zip(STAGE_NAMES, runners, strict=True):
        inside = [p for p in points[stage] if not p.endswith("renamed")]
        point = f"{stage} renamed" if stage in renamed or not inside else rng.choice(inside)
        plan.append((stage, runner, point))
    return plan


def test_sigkill_at_seeded_points_in_every_stage_then_rerun(tmp_path, prefect_api):
    # this checkout's code in every process (the flow too), not the installed package's
    env = env_with_venv() | {"PREFECT_API_URL": prefect_api,
                             "PYTHONPATH": f"{HOOKS}{os.pathsep}{REPO}"}
    base = corpus_workspace(tmp_path / "base")
    log = tmp_path / "points.log"
    done = run(base, "flow", env | {"EMBEDPIPE_CRASH_LOG": str(log)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    points: dict[str, list[str]] = {s: [] for s in STAGE_NAMES}
    for line in log.read_text().splitlines():
        points[line.split()[0]].append(line)
    assert all(f"{s} renamed" in points[s] for s in STAGE_NAMES), points

    ws = corpus_workspace(tmp_path / "ws")
    plan = crash_plan(points, random.Random(SEED))
    for stage, runner, point in plan:
        killed = run(ws, runner, env, at=point)
        assert killed.returncode == -9, (stage, runner, point, killed.stdout[-3000:],
                                         killed.stderr[-3000:])
    final = run(ws, "flow", env)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]

    assert fingerprints(ws) == fingerprints(base)
    results = {str(Path("data") / "cache" / "results")}
    assert without(outputs(ws), results) == without(outputs(base), results)
    # the result caches' shards follow the runs that wrote them; what they hold may not
    # (but ingest's stat cache, keyed by each file's inode and ctime, is the workspace's own)
    mine, theirs = result_entries(ws), result_entries(base)
    differ = sorted({k[0] for k, v in theirs.items()
                     if "ingest/stat" not in k[0] and mine.get(k) != v})
    assert not differ, differ
    assert leftovers(ws) == []
    status = subprocess.run(["dvc", "status"], cwd=ws, env=env, capture_output=True,
                            text=True, check=True)
    assert "up to date" in status.stdout, status.stdout
    assert_no_flow_run_left_running(ws, prefect_api, plan)


def assert_no_flow_run_left_running(ws: Path, api: str, plan: list[tuple[str, str, str]]
                                    ) -> None:
    """Every flow run killed on the workspace is Crashed; none stays Running."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        states = [r.state.type.value for r in client.read_flow_runs()
                  if r.parameters.get("root") == str(ws)]
    kills = sum(runner == "flow" for _, runner, _ in plan)
    assert states.count("CRASHED") == kills and states.count("COMPLETED") == 1, states
