"""Fixed cost of each stage process (what `dvc repro` pays per stage, and `embedpipe run` once):
a fresh interpreter importing the stage module and loading what every run of it loads.

    python -m benchmarks.stage_imports                       # this checkout, 3 repeats
    python -m benchmarks.stage_imports --against /tmp/old    # and an older checkout, in turns

Per stage: CPU seconds (user + system, of the child: a shared machine's load does not count),
wall seconds, peak RSS (VmHWM) and whether torch got imported. chunk also loads the
tokenizer and the sentence splitter, encode the default encoder (the cached OpenVINO export:
run the pipeline once first). With `--against`, the older checkout runs the same snippets, the
two taking turns, so both see the same load. Then Prefect's temporary server as `embedpipe
run` starts it: CPU and wall seconds until it answers, on a new database and on one already
migrated. Writes benchmarks/out/stage_imports.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.report import cpu_label, save

REPO = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "clean", "chunk", "encode", "reduce", "dedup", "index", "evaluate")
LOADS = {  # what every run of the stage loads besides its module
    "chunk": "from tasks.core.config import EncodeConfig\n"
             "from tasks.encoders.model import load_tokenizer\n"
             "from tasks.documents.sentences import sentencizer\n"
             "load_tokenizer(EncodeConfig().model); sentencizer()\n",
    "encode": "from tasks.core.config import EncodeConfig\n"
              "from tasks.encoders.loading import encoder_for\n"
              "encoder_for(EncodeConfig(device='cpu')).encode(['warm up'])\n",
}
REPORT = ("import json, sys\n"
          "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
          "print('RESULT', json.dumps({'torch': 'torch' in sys.modules,"
          " 'peak_rss_mb': int(hwm[0]) / 1024}), flush=True)\n"
          # an interpreter that encodes and exits at once can abort in OpenVINO's thread
          # teardown (rc 134, now and then): what is measured is done by this line
          "import os; os._exit(0)\n")


def measure_once(checkout: Path, stage: str) -> dict[str, Any]:
    """One fresh interpreter in `checkout`: CPU and wall seconds, peak RSS, torch or not."""
    code = f"import tasks.{stage}\n" + LOADS.get(stage, "") + REPORT
    env = {**os.environ, "PYTHONPATH": str(checkout), "HF_HUB_OFFLINE": "1"}
    before = os.times()
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], cwd=checkout, env=env, text=True,
                          capture_output=True, check=False)
    wall = time.perf_counter() - started
    after = os.times()
    if done.returncode != 0:
        raise RuntimeError(f"{checkout} {stage}:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.split("RESULT", 1)[1])
    cpu = (after.children_user - before.children_user
           + after.children_system - before.children_system)
    return {"cpu_s": cpu, "wall_s": wall, **result}


def server_start(fresh_db: bool) -> dict[str, float]:
    """Prefect's temporary server as `embedpipe run` launches it, until /health answers:
    wall and the server process's CPU seconds, on a new database (migrations) or one that a
    previous start already migrated."""
    import tempfile
    import urllib.request

    from flows.temporary_server import _free_port, _launch

    with tempfile.TemporaryDirectory(prefix="embedpipe-prefect-home-") as home:
        os.environ["PREFECT_HOME"] = home
        out: dict[str, float] = {}
        for _ in range(1 if fresh_db else 2):  # the first start migrates the new database
            port, started = _free_port(), time.perf_counter()
            process = _launch(port)
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1):
                        break
                except OSError:
                    time.sleep(0.02)
            stat = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            out = {"wall_s": round(time.perf_counter() - started, 2),
                   "cpu_s": round((int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK"), 2)}
            process.terminate()
            process.wait()
        del os.environ["PREFECT_HOME"]
    return out


def measure(checkouts: dict[str, Path], repeats: int) -> dict[str, dict[str, Any]]:
    """Per checkout and stage: medians over `repeats`, the checkouts taking turns."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        name: {stage: [] for stage in STAGES} for name in checkouts}
    for _ in range(repeats):
        for stage in STAGES:
            for name, checkout in checkouts.items():
                runs[name][stage].append(measure_once(checkout, stage))
    return {name: {stage: {"cpu_s": round(statistics.median(r["cpu_s"] for r in rs), 2),
                           "wall_s": round(statistics.median(r["wall_s"] for r in rs), 2),
                           "peak_rss_mb": round(max(r["peak_rss_mb"] for r in rs)),
                           "torch": any(r["torch"] for r in rs)}
                   for stage, rs in by_stage.items()}
            for name, by_stage in runs.items()}


def markdown(r: dict[str, Any]) -> str:
    names = list(r["measured"])
    head = " | ".join(f"{n}: CPU s / wall s / peak MB / torch" for n in names)
    lines = [f"Fixed cost of a stage process (import + loads), median of {r['repeats']}, "
             f"checkouts taking turns; {r['cpu']}, load average "
             f"{', '.join(f'{x:.1f}' for x in r['load_average'])}:", "",
             f"| stage | {head} |", "|---|" + "---|" * len(names)]
    for stage in STAGES:
        cells = " | ".join(
            f"{m['cpu_s']} / {m['wall_s']} / {m['peak_rss_mb']} / {'yes' if m['torch'] else 'no'}"
            for m in (r["measured"][n][stage] for n in names))
        lines.append(f"| {stage} | {cells} |")
    for n in names:
        total = sum(m["cpu_s"] for m in r["measured"][n].values())
        lines.append(f"\n{n}: {total:.1f} CPU s over the {len(STAGES)} stage processes")
    lines += ["", "Prefect's temporary server (as `embedpipe run` starts it) until /health "
              "answers:", "", "| database | server CPU s | wall s |", "|---|---|---|"]
    for kind, m in r["server"].items():
        lines.append(f"| {kind} | {m['cpu_s']} | {m['wall_s']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--against", type=Path, help="an older checkout to compare with")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    args = parser.parse_args()
    checkouts = {"this": REPO} | ({"against": args.against} if args.against else {})
    report = {"cpu": cpu_label(), "load_average": os.getloadavg(), "repeats": args.repeats,
              "checkouts": {k: str(v) for k, v in checkouts.items()},
              "measured": measure(checkouts, args.repeats),
              "server": {"new (migrations run)": server_start(fresh_db=True),
                         "migrated by an earlier start": server_start(fresh_db=False)}}
    save(args.out, "stage_imports", report, markdown(report))


if __name__ == "__main__":
    main()
