"""Fixed costs of orchestration on the sample corpus, against a real Prefect server.

    python -m benchmarks.overheads                # 3 repeats, medians
    python -m benchmarks.overheads --repeats 5

Copies the sample workspace (as the tests build one, plus this script, so every command runs
that snapshot of the code), starts `prefect server start` on 127.0.0.1 with a temporary
PREFECT_HOME and SQLite database, runs `embedpipe run` once, then times, each `--repeats`
times (median wall and CPU seconds reported):
  (a) `embedpipe run` when every stage is fresh (every stage skipped);
  (b) a no-op `dvc repro`;
  (c) a full run with every stage forced: `embedpipe run --force` against the same stages
      without Prefect in one process (`.fn` of each stage, with and without the `dvc commit`
      the flow does per stage), against the sum of the stages' own seconds (their manifests),
      and against `dvc repro --force` (one process per stage);
  and the import time of `flows.pipeline` and `flows.cli` in a fresh interpreter; and
  extrapolates Prefect's fixed overhead to a 100k-chunk run (labelled as such).
Writes benchmarks/out/overheads.json and overheads.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.report import cpu_label, save

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STAGE_LINE = re.compile(r"^(\w+)\s+ran\s+([\d.]+)s", re.MULTILINE)


@contextmanager
def prefect_server(home: Path) -> Iterator[tuple[str, float]]:
    """A real `prefect server start` on loopback; yields (api url, startup seconds)."""
    from tests.conftest import env_with_venv, free_port

    env = env_with_venv() | {
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    started = time.perf_counter()
    with open(home / "server.log", "w") as log:
        proc = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 180
            while not healthy(url):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("prefect server did not start: "
                                       f"{(home / 'server.log').read_text()[-2000:]}")
                time.sleep(0.25)
            yield url, time.perf_counter() - started
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def healthy(url: str) -> bool:
    """Whether a Prefect API at `url` answers /health with 200."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Runs:
    """Wall and CPU (user + system) seconds of each timed command, under a label.

    CPU seconds are reported too: on a shared machine they vary less than wall time.
    """

    def __init__(self) -> None:
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}

    def time(self, label: str, cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
        """Run `cmd` (which must succeed), record its seconds, return its stdout."""
        cpu, started = _children_cpu(), time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                              check=False, timeout=1800)
        self.wall.setdefault(label, []).append(round(time.perf_counter() - started, 3))
        self.cpu.setdefault(label, []).append(round(_children_cpu() - cpu, 3))
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                               f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc.stdout


def manifest_seconds(ws: Path) -> dict[str, float]:
    """Each stage's own seconds, as its manifest records them (start_stage -> commit)."""
    out = {}
    for path in sorted((ws / "data").glob("[0-9][0-9]_*/_manifest.json")):
        m = json.loads(path.read_text(encoding="utf-8"))
        out[m["stage"]] = float(m["seconds"])
    return out


def median(xs: list[float]) -> float:
    return round(statistics.median(xs), 3)


def encoded_chunks(ws: Path) -> int:
    """Chunks the last encode actually encoded (0: every vector came from the cache)."""
    manifest = next((ws / "data").glob("0*_encode/_manifest.json"))
    return int(json.loads(manifest.read_text(encoding="utf-8"))["rows"]["encoded"])


def import_seconds(module: str, ws: Path, env: dict[str, str]) -> float:
    """Seconds to import `module` in a fresh interpreter (interpreter start excluded)."""
    code = (f"import time; t = time.perf_counter(); import {module}; "
            "print(time.perf_counter() - t)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ws, env=env, capture_output=True,
                          text=True, check=True)
    return float(proc.stdout.strip().splitlines()[-1])


def measure(ws: Path, env: dict[str, str], repeats: int) -> dict[str, Any]:
    """All the timings; the workspace has had one full flow run."""
    embedpipe, dvc = [sys.executable, "-m", "flows.cli"], str(BIN / "dvc")
    bare = [sys.executable, "-m", "benchmarks.overheads", "--bare", "."]
    runs = Runs()
    flow_rows, manifests, encoded = [], [], []
    for _ in range(repeats):
        out = runs.time("fresh_run", [*embedpipe, "run"], ws, env)
        if " ran " in out:
            raise RuntimeError(f"`embedpipe run` on a fresh workspace ran a stage:\n{out}")
        out = runs.time("noop_repro", [dvc, "repro"], ws, env)
        if "Running stage" in out:
            raise RuntimeError(f"no-op `dvc repro` ran a stage:\n{out}")
    for _ in range(repeats):
        out = runs.time("forced_flow", [*embedpipe, "run", "--force"], ws, env)
        flow_rows.append({s: float(v) for s, v in STAGE_LINE.findall(out)})
        manifests.append(manifest_seconds(ws))
        encoded.append(encoded_chunks(ws))
        runs.time("bare_with_dvc_commit", [*bare, "--record"], ws, env)
        encoded.append(encoded_chunks(ws))
        runs.time("bare", bare, ws, env)
        encoded.append(encoded_chunks(ws))
        runs.time("repro_force", [dvc, "repro", "--force"], ws, env)
        encoded.append(encoded_chunks(ws))
    for _ in range(repeats):
        runs.time("python -c pass", [sys.executable, "-c", "pass"], ws, env)
    status = subprocess.run([dvc, "status"], cwd=ws, env=env, capture_output=True, text=True,
                            check=False)
    return {"wall_s": runs.wall, "cpu_s": runs.cpu, "flow_stage_rows_s": flow_rows,
            "stage_manifest_s": manifests, "dvc_status_after": status.stdout.strip(),
            "encoded_per_forced_run": encoded,
            "import_s": {m: [round(import_seconds(m, ws, env), 3) for _ in range(repeats)]
                         for m in ("flows.pipeline", "flows.cli")}}


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    """Medians and the derived overheads (wall and CPU seconds)."""
    s: dict[str, Any] = {
        "wall_s": {k: median(v) for k, v in raw["wall_s"].items()},
        "cpu_s": {k: median(v) for k, v in raw["cpu_s"].items()},
        "import_s": {k: median(v) for k, v in raw["import_s"].items()},
        "sum_stage_manifest_s": median([sum(d.values()) for d in raw["stage_manifest_s"]]),
        "sum_flow_stage_rows_s": median([sum(d.values()) for d in raw["flow_stage_rows_s"]]),
        "per_stage_manifest_s": {k: median([d[k] for d in raw["stage_manifest_s"]])
                                 for k in raw["stage_manifest_s"][0]},
    }
    for kind in ("wall_s", "cpu_s"):
        t = s[kind]
        s[f"overhead_{kind}"] = {
            "prefect": round(t["forced_flow"] - t["bare_with_dvc_commit"], 3),
            "prefect_pct": round(100 * (t["forced_flow"] - t["bare_with_dvc_commit"])
                                 / t["bare_with_dvc_commit"], 1),
            "dvc_commits": round(t["bare_with_dvc_commit"] - t["bare"], 3),
            "prefect_and_dvc": round(t["forced_flow"] - t["bare"], 3),
        }
    flow = s["wall_s"]["forced_flow"]
    s["outside_stages_s"] = round(flow - s["sum_stage_manifest_s"], 3)
    s["outside_stages_pct"] = round(100 * s["outside_stages_s"] / s["sum_stage_manifest_s"], 1)
    return s


def extrapolate(report: dict[str, Any], n_chunks: int) -> dict[str, Any]:
    """Prefect's fixed overhead against an estimate of a full run at `n_chunks` chunks.

    An extrapolation, not a measurement: the run is estimated from encode alone, at the
    chunks/s of the cold first run here (model load included), so the percent is an upper
    bound. What of Prefect's cost grows with size (one progress-artifact update per encode
    block of batch_size x 64 texts, log lines) is not in the fixed figure.
    """
    rate = report["first_run_encoded"] / report["first_run_stage_s"]["encode"]
    encode_s = n_chunks / rate
    fixed = report["summary"]["overhead_wall_s"]["prefect"]
    fixed_cpu = report["summary"]["overhead_cpu_s"]["prefect"]
    return {"chunks": n_chunks, "encode_chunks_per_s_first_run": round(rate, 1),
            "estimated_encode_s": round(encode_s), "prefect_fixed_wall_s": fixed,
            "prefect_fixed_cpu_s": fixed_cpu,
            "prefect_pct_of_encode_alone": round(100 * fixed / encode_s, 3),
            "prefect_cpu_pct_of_encode_alone": round(100 * fixed_cpu / encode_s, 3)}


LABELS = {
    "fresh_run": "(a) `embedpipe run`, every stage fresh",
    "noop_repro": "(b) no-op `dvc repro`",
    "forced_flow": "(c) `embedpipe run --force` (Prefect flow)",
    "bare_with_dvc_commit": "(c) same stages in one process, no Prefect, + `dvc commit` each",
    "bare": "(c) same stages in one process, no Prefect, no DVC",
    "repro_force": "(c) `dvc repro --force` (one process per stage)",
    "python -c pass": "interpreter start (`python -c pass`)",
}


def markdown(report: dict[str, Any]) -> str:
    s, raw = report["summary"], report["raw"]
    lines = [f"embedpipe orchestration overheads, sample corpus, median of {report['repeats']}; "
             f"{report['cpu']}; load average before {report['load_before']}, after "
             f"{report['load_after']}", ""]
    if max(report["load_before"][0], report["load_after"][0]) > 1.5:
        lines += ["**Other work was running (load average > 1.5 on 2 cores): the (c) "
                  "differences are within its noise; rerun on a quiet machine.**", ""]
    lines += ["| measurement | wall s | CPU s | wall s, each run |", "|---|---|---|---|"]
    lines += [f"| {text} | {s['wall_s'][k]:.2f} | {s['cpu_s'][k]:.2f} | "
              f"{', '.join(f'{x:.2f}' for x in raw['wall_s'][k])} |" for k, text in LABELS.items()]
    lines += [f"| (c) sum of the stages' own seconds (manifests, forced flow) | "
              f"{s['sum_stage_manifest_s']:.2f} | | |",
              f"| (c) sum of the flow's stage rows (task + `dvc commit`) | "
              f"{s['sum_flow_stage_rows_s']:.2f} | | |",
              "", "| overhead of the forced flow | wall s | CPU s |", "|---|---|---|"]
    w, c = s["overhead_wall_s"], s["overhead_cpu_s"]
    lines += [f"| Prefect: flow − (stages + `dvc commit`, no Prefect) | {w['prefect']:.2f} "
              f"({w['prefect_pct']}%) | {c['prefect']:.2f} ({c['prefect_pct']}%) |",
              f"| DVC bookkeeping: 9 × `dvc commit` | {w['dvc_commits']:.2f} | "
              f"{c['dvc_commits']:.2f} |",
              f"| Prefect + DVC: flow − bare stages | {w['prefect_and_dvc']:.2f} | "
              f"{c['prefect_and_dvc']:.2f} |",
              f"| all outside the stages: flow − sum of stage seconds | "
              f"{s['outside_stages_s']:.2f} ({s['outside_stages_pct']}%) | |",
              "", "| import in a fresh interpreter | median s |", "|---|---|"]
    lines += [f"| `import {k}` | {v:.3f} |" for k, v in s["import_s"].items()]
    lines += ["", "| stage (forced flow, manifest) | median s |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in s["per_stage_manifest_s"].items()]
    lines += ["", f"Prefect server start: {report['server_start_s']:.1f} s; first full "
              f"`embedpipe run` (cold): {report['first_run_s']:.1f} s; `dvc status` at the end: "
              f"{raw['dvc_status_after']!r}; chunks encoded in each forced run (0: all from the "
              f"vector cache, as intended): {raw['encoded_per_forced_run']}"]
    x = report["at_100k"]
    lines += ["", f"At {x['chunks']:,} chunks (extrapolated, not measured): encode alone at "
              f"the first run's {x['encode_chunks_per_s_first_run']} chunks/s takes "
              f"~{x['estimated_encode_s']:,} s; Prefect's fixed {x['prefect_fixed_wall_s']:.2f} s "
              f"wall ({x['prefect_fixed_cpu_s']:.2f} s CPU) would be "
              f"{x['prefect_pct_of_encode_alone']}% ({x['prefect_cpu_pct_of_encode_alone']}%) "
              "of that."]
    return "\n".join(lines) + "\n"


def run_bare(root: Path, record: bool) -> None:
    """Every stage's function in order in this process, without Prefect (`--bare`)."""
    from flows.dvc_bridge import open_repo, record_stage
    from flows.pipeline import STAGE_TASKS
    from tasks.core.registry import STAGE_NAMES

    with open_repo(root) as repo:  # opened once, as the flow does
        for name in STAGE_NAMES:
            STAGE_TASKS[name].fn(root=str(root))
            if record:
                record_stage(repo, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    parser.add_argument("--bare", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--record", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.bare:
        run_bare(args.bare, args.record)
        return
    # The tests' helpers, imported here only: the `--bare` baseline must not pay for pytest.
    from tests.conftest import env_with_venv, make_workspace

    report: dict[str, Any] = {"repeats": args.repeats, "cpu": cpu_label(),
                              "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="embedpipe-overheads-") as tmp:
        home = Path(tmp) / "prefect_home"
        home.mkdir()
        ws = make_workspace(Path(tmp) / "ws")
        # Every command runs the workspace's copy of the code (`python -m flows.cli` is the
        # `embedpipe` script), so edits made in this checkout meanwhile stay out of it.
        (ws / "benchmarks").mkdir()
        for name in ("__init__.py", "overheads.py", "report.py"):
            shutil.copy2(REPO / "benchmarks" / name, ws / "benchmarks" / name)
        with prefect_server(home) as (url, startup):
            env = env_with_venv() | {"PREFECT_API_URL": url, "PREFECT_HOME": str(home)}
            report["server_start_s"] = startup
            first = Runs()
            first.time("first", [sys.executable, "-m", "flows.cli", "run"], ws, env)
            report["first_run_s"] = first.wall["first"][0]
            report["first_run_stage_s"] = manifest_seconds(ws)
            report["first_run_encoded"] = encoded_chunks(ws)
            report["raw"] = measure(ws, env, args.repeats)
    report["load_after"] = os.getloadavg()
    report["summary"] = summarize(report["raw"])
    report["at_100k"] = extrapolate(report, 100_000)
    save(args.out, "overheads", report, markdown(report))


if __name__ == "__main__":
    main()
