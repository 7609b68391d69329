"""What DVC costs the flow per stage: its status before a stage and its commit after.

    python -m benchmarks.stage_overhead               # 3 repeats, medians

On the sample workspace after one full run, each repeat runs, in a fresh process, what
`embedpipe run` asks DVC around every stage (flows/dvc_bridge.py: `stale_reason`, then
`record_stage`, the `dvc commit -f` that writes the stage into dvc.lock; and
`explain_stale`, the line saying why it runs), for each stage in order, with the DVC
repository opened once as the flow opens it. Twice, side by side: with ruamel.yaml's C
parser (`ruamel.yaml.clib`, a dependency since 2026-12-07) and with it hidden, as
ruamel.yaml 0.19 runs without that package (pure-Python parsing of dvc.yaml and dvc.lock).
Writes benchmarks/out/stage-overhead.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
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
from flows.dvc_bridge import explain_stale, open_repo, record_stage, stale_reason
from tasks.core.registry import STAGE_NAMES
import ruamel.yaml.main
out = {"c_parser": ruamel.yaml.main.CParser is not None}
with open_repo(Path.cwd()) as repo:
    for stage in STAGE_NAMES:
        t = time.perf_counter()
        changes = stale_reason(repo, stage) or []
        explain_stale(Path.cwd(), stage, changes)
        t1 = time.perf_counter()
        record_stage(repo, stage)
        out[stage] = {"status": t1 - t, "commit": time.perf_counter() - t1}
print(json.dumps(out))
"""


def once(ws: Path, env: dict[str, str], c_parser: bool) -> dict[str, Any]:
    code = ("" if c_parser else HIDE_C_PARSER) + TIMED
    out = subprocess.run([sys.executable, "-c", code], cwd=ws, env=env, check=False,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    got = json.loads(out.stdout.strip().splitlines()[-1])
    if got.pop("c_parser") != c_parser:
        raise RuntimeError(f"the C parser was {'not ' if c_parser else ''}used")
    return got


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    stages = list(runs[0])
    per = {s: {k: round(statistics.median(r[s][k] for r in runs), 3)
               for k in ("status", "commit")} for s in stages}
    return {"stages": per,
            "mean_status_s": round(statistics.mean(p["status"] for p in per.values()), 3),
            "mean_commit_s": round(statistics.mean(p["commit"] for p in per.values()), 3),
            "total_s": round(sum(p["status"] + p["commit"] for p in per.values()), 3)}


def markdown(report: dict[str, Any]) -> str:
    c, pure = report["c_parser"], report["pure_python"]
    lines = [f"DVC's status and commit per stage, as `embedpipe run` asks them (sample "
             f"workspace, {len(c['stages'])} stages, median of {report['repeats']}; "
             f"{report['cpu']}; dvc.lock {report['dvc_lock_bytes']:,} bytes):", "",
             "| | ruamel's pure-Python parser | ruamel's C parser (now) |", "|---|---|---|",
             f"| status + why, mean per stage | {pure['mean_status_s']:.3f} s | "
             f"**{c['mean_status_s']:.3f} s** |",
             f"| commit (dvc.lock written), mean per stage | {pure['mean_commit_s']:.3f} s | "
             f"**{c['mean_commit_s']:.3f} s** |",
             f"| all stages | {pure['total_s']:.2f} s | **{c['total_s']:.2f} s** |"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tests.workspace import env_with_venv, make_workspace

    with tempfile.TemporaryDirectory(prefix="embedpipe-stage-overhead-") as tmp:
        ws = make_workspace(Path(tmp) / "ws")
        env = env_with_venv() | {"PREFECT_HOME": str(Path(tmp) / "prefect"),
                                 "PYTHONPATH": str(ws)}
        subprocess.run([sys.executable, "-m", "flows.cli", "run", "--set",
                        "run.server_idle_s=0"], cwd=ws, env=env, check=True,
                       capture_output=True)
        runs: dict[str, list[dict[str, Any]]] = {"pure_python": [], "c_parser": []}
        for i in range(args.repeats):  # in turns, each first in every other repeat
            for c_parser in ((False, True) if i % 2 == 0 else (True, False)):
                runs["c_parser" if c_parser else "pure_python"].append(
                    once(ws, env, c_parser=c_parser))
        report = {"cpu": cpu_label(), "repeats": args.repeats,
                  "dvc_lock_bytes": (ws / "dvc.lock").stat().st_size,
                  **{k: summary(v) for k, v in runs.items()}}
    save(args.out, "stage-overhead", report, markdown(report))


if __name__ == "__main__":
    main()
