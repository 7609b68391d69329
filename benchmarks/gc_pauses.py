"""The cyclic collector's pauses in a whole `embedpipe run`, with the older objects frozen
around the run and each stage (tasks/core/memory.py) and without, side by side.

    python -m benchmarks.gc_pauses               # 3 runs each, in turns

On the sample workspace after one full run, each timed run is `embedpipe run --force`
(every stage runs) on the kept temporary Prefect server. "without" runs the same command
with `gc.freeze`/`gc.unfreeze` made no-ops before the CLI starts, which is the code before
the change. Reported per run: seconds in the collector (from `gc.callbacks`), the number
of full (generation 2) collections and the longest, the run's wall seconds and peak RSS.
Writes benchmarks/out/gc-pauses.json and .md.
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
from flows.kept_server import FOLDER, stop

REPO = Path(__file__).resolve().parents[1]
MARK = "GC-PAUSES "

RUN = """
import gc, json, resource, runpy, sys, time
if {without!r}:
    gc.freeze = gc.unfreeze = lambda: None
pauses, started = [], [0.0]
def watch(phase, info):
    if phase == "start":
        started[0] = time.perf_counter()
    else:
        pauses.append((info["generation"], time.perf_counter() - started[0]))
gc.callbacks.append(watch)
began = time.perf_counter()
sys.argv = ["embedpipe", "run", "--force"]
try:
    runpy.run_module("flows.cli", run_name="__main__", alter_sys=True)
except SystemExit as e:
    if e.code:
        raise
full = [s for g, s in pauses if g == 2]
print({mark!r} + json.dumps({{
    "gc_s": round(sum(s for _, s in pauses), 3), "full": len(full),
    "longest_full_s": round(max(full, default=0.0), 3),
    "wall_s": round(time.perf_counter() - began, 2),
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}}))
"""


def one_run(ws: Path, env: dict[str, str], without: bool) -> dict[str, Any]:
    """`embedpipe run --force` in `ws`, its collector figures."""
    out = subprocess.run([sys.executable, "-c", RUN.format(without=without, mark=MARK)],
                         check=False, cwd=ws, env=env, capture_output=True, text=True)
    line = next((x for x in out.stdout.splitlines() if x.startswith(MARK)), None)
    if out.returncode or line is None:
        raise RuntimeError(f"embedpipe run failed:\n{(out.stdout + out.stderr)[-3000:]}")
    return json.loads(line[len(MARK):])


def markdown(report: dict[str, Any]) -> str:
    lines = [f"The cyclic collector in `embedpipe run --force` on the sample workspace "
             f"({report['repeats']} runs each, in turns, medians; {report['cpu']}):", "",
             "| older objects | collector s | full collections | longest full s | run s | "
             "peak RSS MB |", "|---|---|---|---|---|---|"]
    for mode, label in (("without", "not frozen (before)"), ("frozen", "frozen (now)")):
        m = report[mode]["median"]
        lines.append(f"| {label} | {m['gc_s']} | {m['full']} | {m['longest_full_s']} | "
                     f"{m['wall_s']} | {m['peak_rss_mb']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tests.workspace import env_with_venv, make_workspace  # noqa: PLC0415

    report: dict[str, Any] = {"cpu": cpu_label(), "repeats": args.repeats}
    with tempfile.TemporaryDirectory(prefix="embedpipe-gc-") as tmp:
        ws = make_workspace(Path(tmp) / "ws")
        env = env_with_venv() | {"PREFECT_HOME": str(Path(tmp) / "prefect")}
        env.pop("PREFECT_API_URL", None)
        env["PYTHONPATH"] = str(ws)
        try:
            one_run(ws, env, without=False)  # the whole build once; the server kept
            runs: dict[str, list[dict[str, Any]]] = {"without": [], "frozen": []}
            for _ in range(args.repeats):
                for mode, done in runs.items():
                    done.append(one_run(ws, env, without=mode == "without"))
        finally:
            stop(Path(tmp) / "prefect" / FOLDER)
    for mode, rs in runs.items():
        report[mode] = {"runs": rs, "median": {k: statistics.median(r[k] for r in rs)
                                               for k in rs[0]}}
    save(args.out, "gc-pauses", report, markdown(report))


if __name__ == "__main__":
    main()
