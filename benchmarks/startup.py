"""Fixed cost of a run: seconds from `embedpipe run` to its first stage starting.

    python -m benchmarks.startup               # 5 repeats per mode, medians

On the sample workspace after one full run, each repeat edits `tasks/ingest.py` (a comment,
so ingest is stale and its output unchanged) and times `embedpipe run` from launch to the
log line of ingest starting, and to the end, in three modes:
  kept:      no Prefect API configured (the default `run.server_idle_s`): the first run of a
             fresh PREFECT_HOME starts Prefect's temporary server and keeps it; the runs
             timed use it (the first run's own figures are reported apart);
  per run:   no Prefect API configured and `run.server_idle_s: 0`: each run starts and stops
             its own temporary server (on a migrated database);
  server:    PREFECT_API_URL names a `prefect server start` already running on loopback.
Writes benchmarks/out/startup.json and startup.md.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.overheads import prefect_server
from benchmarks.report import cpu_label, save
from flows.kept_server import FOLDER, stop

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


def measure(ws: Path, env: dict[str, str], repeats: int, idle_s: float = 600
            ) -> dict[str, Any]:
    """The first run (after a full one with this env) and `repeats` more, at
    `run.server_idle_s` = `idle_s`."""
    params = (ws / "params.yaml").read_text()
    (ws / "params.yaml").write_text(re.sub(r"server_idle_s: [\d.]+", f"server_idle_s: {idle_s}",
                                           params))
    first = time_run(ws, env)
    runs = [time_run(ws, env) for _ in range(repeats)]
    return {"first": first, "runs": runs,
            "median": {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}}


def markdown(report: dict[str, Any]) -> str:
    lines = [f"Seconds from `embedpipe run` to its first stage starting ({report['repeats']} "
             f"runs per mode, medians; sample workspace; {report['cpu']}):", "",
             "| mode | flow begins | first stage starts |", "|---|---|---|"]
    for mode, label in (
            ("server", "PREFECT_API_URL set (a running `prefect server start`)"),
            ("kept", "no API configured: the temporary server an earlier run kept (default)"),
            ("per run", "no API configured, `run.server_idle_s: 0`: a temporary server per run")):
        m = report[mode]["median"]
        lines.append(f"| {label} | {m['flow_begins_s']:.2f} | **{m['first_stage_s']:.2f}** |")
    f = report["kept"]["first"]
    lines.append(f"| no API configured, the first run of a PREFECT_HOME (it starts the kept "
                 f"server; a new database) | {f['flow_begins_s']:.2f} | "
                 f"{f['first_stage_s']:.2f} |")
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
        (Path(tmp) / "server").mkdir()
        with prefect_server(Path(tmp) / "server") as (url, _):
            server = base | {"PREFECT_API_URL": url, "PREFECT_HOME": str(Path(tmp) / "server")}
            subprocess.run([sys.executable, "-m", "flows.cli", "run"], cwd=ws, env=server,
                           check=True, capture_output=True)  # the whole build, once
            report["server"] = measure(ws, server, args.repeats)
        for mode, idle_s in (("kept", 600), ("per run", 0)):
            home = Path(tmp) / mode.replace(" ", "-")
            try:
                report[mode] = measure(ws, base | {"PREFECT_HOME": str(home)}, args.repeats,
                                       idle_s)
            finally:
                stop(home / FOLDER)
    save(args.out, "startup", report, markdown(report))


if __name__ == "__main__":
    main()
