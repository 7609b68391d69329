"""Fixed cost of a run: seconds from `embedpipe run` to its first stage starting.

    python -m benchmarks.startup               # 5 repeats per mode, medians

On the sample workspace after one full run, each repeat edits `tasks/ingest.py` (a comment,
so ingest is stale and its output unchanged) and times `embedpipe run` from launch to the
log line of ingest starting, and to the end, in two modes:
  temporary: no Prefect API configured, so `embedpipe run` starts Prefect's temporary
             server itself (a fresh PREFECT_HOME);
  server:    PREFECT_API_URL names a `prefect server start` already running on loopback.
Writes benchmarks/out/startup.json and startup.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.overheads import prefect_server
from benchmarks.report import cpu_label, save

REPO = Path(__file__).resolve().parents[1]


def time_run(ws: Path, env: dict[str, str]) -> dict[str, float]:
    """Launch `embedpipe run`; seconds to the flow's first line, to ingest starting, to exit."""
    with open(ws / "tasks" / "ingest.py", "a") as f:
        f.write(f"# {time.time_ns()}\n")
    marks: dict[str, float] = {}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "run"], cwd=ws, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        now = time.perf_counter() - started
        if "Beginning flow run" in line:
            marks.setdefault("flow_begins_s", now)
        if "ingest: running" in line:
            marks.setdefault("first_stage_s", now)
    if proc.wait() != 0 or "first_stage_s" not in marks:
        raise RuntimeError("embedpipe run failed or never started ingest:\n"
                           + "".join(lines)[-3000:])
    marks["exit_s"] = time.perf_counter() - started
    return {k: round(v, 3) for k, v in marks.items()}


def measure(ws: Path, env: dict[str, str], repeats: int) -> dict[str, Any]:
    subprocess.run([sys.executable, "-m", "flows.cli", "run"], cwd=ws, env=env, check=True,
                   capture_output=True)
    runs = [time_run(ws, env) for _ in range(repeats)]
    return {"runs": runs, "median": {k: round(statistics.median(r[k] for r in runs), 3)
                                     for k in runs[0]}}


def markdown(report: dict[str, Any]) -> str:
    lines = [f"Seconds from `embedpipe run` to its first stage starting ({report['repeats']} "
             f"runs per mode, medians; sample workspace; {report['cpu']}):", "",
             "| mode | flow begins | first stage starts |", "|---|---|---|"]
    for mode, label in (("server", "PREFECT_API_URL set (a running `prefect server start`)"),
                        ("temporary", "no API configured: Prefect's temporary server")):
        m = report[mode]["median"]
        lines.append(f"| {label} | {m['flow_begins_s']:.2f} | **{m['first_stage_s']:.2f}** |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tests.conftest import env_with_venv, make_workspace

    report: dict[str, Any] = {"cpu": cpu_label(), "repeats": args.repeats}
    with tempfile.TemporaryDirectory(prefix="embedpipe-startup-") as tmp:
        ws = make_workspace(Path(tmp) / "ws")
        base = env_with_venv()
        base.pop("PREFECT_API_URL", None)
        (Path(tmp) / "home").mkdir()
        report["temporary"] = measure(ws, base | {"PREFECT_HOME": str(Path(tmp) / "home")},
                                      args.repeats)
        (Path(tmp) / "server").mkdir()
        with prefect_server(Path(tmp) / "server") as (url, _):
            report["server"] = measure(ws, base | {"PREFECT_API_URL": url,
                                                   "PREFECT_HOME": str(Path(tmp) / "server")},
                                       args.repeats)
    save(args.out, "startup", report, markdown(report))


if __name__ == "__main__":
    main()
