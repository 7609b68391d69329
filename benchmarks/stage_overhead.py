"""What DVC costs the flow per stage: its status before a stage and its commit after.

    python -m benchmarks.stage_overhead                     # code digests vs modules listed
    python -m benchmarks.stage_overhead --compare parser    # ruamel's C parser vs none

On the sample workspace after one full run, each repeat runs, in a fresh process, what
`embedpipe run` asks DVC around every stage (flows/dvc_bridge.py: `stale_reason`, then
`record_stage`, the `dvc commit -f` that writes the stage into dvc.lock; and
`explain_stale`, the line saying why it runs), for each stage in order, with the DVC
repository opened once as the flow opens it, and (where the workspace has the DVC stage
`code`) the code digests refreshed first as the flow does. Two variants side by side, in
turns:
- `layout`: each stage's code judged by one digest file (dvc.yaml as generated now) against
  every module of every stage listed as its deps (as dvc.yaml was until 2026-12-07), in a
  copy of the workspace whose dvc.yaml lists them and whose dvc.lock is written afresh;
- `parser`: ruamel.yaml's C parser (`ruamel.yaml.clib`, a dependency since 2026-12-07) against
  it hidden, as ruamel.yaml 0.19 runs without that package.
Writes benchmarks/out/stage-overhead[-parser].json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.report import cpu_label, save

REPO = Path(__file__).resolve().parents[1]
HIDE_C_PARSER = "import sys; sys.modules['_ruamel_yaml'] = None\n"  # import fails: pure Python
TIMED = """
import json, time
from pathlib import Path
from flows.dvc_bridge import (explain_stale, open_repo, record_stage, refresh_code_digests,
                              stale_reason)
from tasks.core.config import load_params
from tasks.core.registry import CODE_STAGE, STAGE_NAMES
import ruamel.yaml.main, yaml
out = {"c_parser": ruamel.yaml.main.CParser is not None}
digests = CODE_STAGE in yaml.safe_load(Path("dvc.yaml").read_text())["stages"]
with open_repo(Path.cwd()) as repo:
    t = time.perf_counter()
    if digests:
        refresh_code_digests(repo, load_params(Path("params.yaml")))
    out["refresh"] = time.perf_counter() - t
    for stage in STAGE_NAMES:
        t = time.perf_counter()
        changes = stale_reason(repo, stage) or []
        explain_stale(Path.cwd(), stage, changes)
        t1 = time.perf_counter()
        record_stage(repo, stage)
        out[stage] = {"status": t1 - t, "commit": time.perf_counter() - t1}
print(json.dumps(out))
"""
RELOCK = """
from dvc.repo import Repo
with Repo(".") as repo:
    repo.commit(None, force=True)
"""


# (variant names, the label of each in the table) per comparison; the second is what runs now
VARIANTS = {"layout": (("modules_listed", "every module listed per stage"),
                       ("code_digests", "one code digest per stage (now)")),
            "parser": (("pure_python", "ruamel's pure-Python parser"),
                       ("c_parser", "ruamel's C parser (now)"))}


def once(ws: Path, env: dict[str, str], c_parser: bool = True) -> dict[str, Any]:
    code = ("" if c_parser else HIDE_C_PARSER) + TIMED
    out = subprocess.run([sys.executable, "-c", code], cwd=ws, env=env, check=False,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    got = json.loads(out.stdout.strip().splitlines()[-1])
    if got.pop("c_parser") != c_parser:
        raise RuntimeError(f"the C parser was {'not ' if c_parser else ''}used")
    return got


def modules_listed(ws: Path, dest: Path, env: dict[str, str]) -> Path:
    """A copy of `ws` whose dvc.yaml lists every module of each stage as its deps (no DVC
    stage `code`), its dvc.lock written afresh by `dvc commit -f`."""
    import yaml  # noqa: PLC0415

    from tasks.core.code_digest import digest_path, stage_modules  # noqa: PLC0415
    from tasks.core.registry import CODE_STAGE  # noqa: PLC0415

    shutil.copytree(ws, dest, symlinks=True)
    dvc_yaml = yaml.safe_load((dest / "dvc.yaml").read_text(encoding="utf-8"))
    del dvc_yaml["stages"][CODE_STAGE]
    for name, stage in dvc_yaml["stages"].items():
        digest = digest_path("data", name)
        stage["deps"] = [m for d in stage["deps"]
                         for m in (stage_modules(name) if d == digest else (d,))]
    (dest / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False), encoding="utf-8")
    (dest / "dvc.lock").unlink()
    subprocess.run([sys.executable, "-c", RELOCK], cwd=dest, env=env | {"PYTHONPATH": str(dest)},
                   check=True, capture_output=True)
    return dest


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    stages = [s for s in runs[0] if s != "refresh"]
    per = {s: {k: round(statistics.median(r[s][k] for r in runs), 3)
               for k in ("status", "commit")} for s in stages}
    refresh = round(statistics.median(r["refresh"] for r in runs), 3)
    return {"stages": per, "refresh_s": refresh,
            "mean_status_s": round(statistics.mean(p["status"] for p in per.values()), 3),
            "mean_commit_s": round(statistics.mean(p["commit"] for p in per.values()), 3),
            "total_s": round(refresh + sum(p["status"] + p["commit"] for p in per.values()), 3)}


def markdown(report: dict[str, Any]) -> str:
    (old, old_label), (new, new_label) = VARIANTS[report["compare"]]
    a, b = report[old], report[new]
    lines = [f"DVC's status and commit per stage, as `embedpipe run` asks them (sample "
             f"workspace, {len(b['stages'])} stages, median of {report['repeats']}; "
             f"{report['cpu']}):", "",
             f"| | {old_label} | {new_label} |", "|---|---|---|",
             f"| dvc.lock | {a['dvc_lock_bytes']:,} bytes | {b['dvc_lock_bytes']:,} bytes |",
             f"| code digests refreshed, once a run | {a['refresh_s']:.3f} s | "
             f"**{b['refresh_s']:.3f} s** |",
             f"| status + why, mean per stage | {a['mean_status_s']:.3f} s | "
             f"**{b['mean_status_s']:.3f} s** |",
             f"| commit (dvc.lock written), mean per stage | {a['mean_commit_s']:.3f} s | "
             f"**{b['mean_commit_s']:.3f} s** |",
             f"| all stages, with the refresh | {a['total_s']:.2f} s | **{b['total_s']:.2f} s** |"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compare", choices=sorted(VARIANTS), default="layout")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tests.workspace import env_with_venv, make_workspace  # noqa: PLC0415

    (old, _), (new, _) = VARIANTS[args.compare]
    with tempfile.TemporaryDirectory(prefix="embedpipe-stage-overhead-") as tmp:
        ws = make_workspace(Path(tmp) / "ws")
        env = env_with_venv() | {"PREFECT_HOME": str(Path(tmp) / "prefect"),
                                 "PYTHONPATH": str(ws)}
        subprocess.run([sys.executable, "-m", "flows.cli", "run", "--set",
                        "run.server_idle_s=0"], cwd=ws, env=env, check=True,
                       capture_output=True)
        if args.compare == "layout":
            spaces = {old: (modules_listed(ws, Path(tmp) / "listed", env), True), new: (ws, True)}
        else:
            spaces = {old: (ws, False), new: (ws, True)}
        runs: dict[str, list[dict[str, Any]]] = {old: [], new: []}
        for i in range(args.repeats):  # in turns, each first in every other repeat
            for name in ((old, new) if i % 2 == 0 else (new, old)):
                where, c_parser = spaces[name]
                runs[name].append(once(where, env | {"PYTHONPATH": str(where)}, c_parser))
        report = {"cpu": cpu_label(), "repeats": args.repeats, "compare": args.compare,
                  **{k: summary(v) | {"dvc_lock_bytes": (spaces[k][0] / "dvc.lock").stat(
                      ).st_size} for k, v in runs.items()}}
    save(args.out, "stage-overhead" + ("" if args.compare == "layout" else "-parser"), report,
         markdown(report))


if __name__ == "__main__":
    main()
