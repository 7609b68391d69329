"""The sharded stages on Dask against one process, side by side in one run.

    python -m benchmarks.dask_scale [--chunks 3000] [--rss 10000 100000]

Throughput of clean, chunk and encode (the stages that run in shards) with the local
executor, and on a LocalCluster of 1 and of 2 process workers (one thread each), on the same
generated corpus (benchmarks/corpus.py), vector cache off so every run encodes everything.
The cluster is started before the stages (as the flow does), so its start-up is reported
apart. Then the driver's peak RSS (the stage process alone, not its workers) for the three
stages on Dask at each `--rss` size, on one-sentence records so 100k chunks encode in minutes.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.report import cpu_label, save

REPO = Path(__file__).resolve().parents[1]
SHARDED = ("clean", "chunk", "encode")


def workspace(ws: Path, corpus: Path, overrides: dict[str, Any]) -> Path:
    from tasks.core.params_file import write_overrides

    ws.mkdir(parents=True)
    (ws / "params.yaml").write_text((REPO / "params.yaml").read_text())
    write_overrides(ws / "params.yaml", {"ingest.source": str(corpus), "encode.cache": False,
                                         "encode.device": "cpu", **overrides})
    return ws


def timed_stages(ws: Path) -> dict[str, float]:
    """Seconds of each sharded stage (ingest runs first, untimed), under `run_cluster`."""
    from flows.pipeline import STAGE_TASKS
    from tasks.core.config import load_params
    from tasks.core.shards import run_cluster

    STAGE_TASKS["ingest"].fn(root=str(ws))
    started = time.perf_counter()
    out = {}
    with run_cluster(load_params(ws / "params.yaml").run):
        out["cluster_start"] = round(time.perf_counter() - started, 2)
        for name in SHARDED:
            t = time.perf_counter()
            STAGE_TASKS[name].fn(root=str(ws))
            out[name] = round(time.perf_counter() - t, 2)
    return out


def throughput(corpus: Path, tmp: Path) -> dict[str, Any]:
    sides = {"local": {}, "dask 1 worker": {"run.executor": "dask", "run.dask.workers": 1},
             "dask 2 workers": {"run.executor": "dask", "run.dask.workers": 2}}
    out = {}
    for name, overrides in sides.items():
        ws = workspace(tmp / name.replace(" ", "-"), corpus, overrides)
        out[name] = timed_stages(ws)
        manifest = json.loads((ws / "data/03_chunk/_manifest.json").read_text())
        out[name]["chunks"] = manifest["rows"]["chunks"]
    return out


def short_records(path: Path, n: int, seed: int = 0) -> None:
    """`n` one-sentence records (JSONL) recombined from the sample corpus's sentences."""
    from benchmarks.corpus import sample_sentences

    rng = random.Random(seed)
    pool = [s for p in sample_sentences(REPO / "data/sample").values() for s in p]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"r{i}", "text": f"{rng.choice(pool)} ({i})"}) + "\n")


def driver_rss(n: int, tmp: Path) -> dict[str, Any]:
    """Peak RSS of a process that runs the three stages on a 2-worker LocalCluster."""
    corpus = tmp / f"short-{n}" / "corpus"
    short_records(corpus / "records.jsonl", n)
    ws = workspace(tmp / f"rss-{n}", corpus, {"run.executor": "dask", "run.dask.workers": 2})
    code = ("import json, resource, sys; from benchmarks.dask_scale import timed_stages; "
            "from pathlib import Path; t = timed_stages(Path(sys.argv[1])); "
            "print(json.dumps({'seconds': t, 'peak_rss_mb': round(resource.getrusage("
            "resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))")
    proc = subprocess.run([sys.executable, "-c", code, str(ws)], cwd=REPO, capture_output=True,
                          text=True, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["chunks"] = json.loads((ws / "data/03_chunk/_manifest.json").read_text())["rows"][
        "chunks"]
    return result


def markdown(r: dict[str, Any]) -> str:
    local = r["throughput"]["local"]
    lines = [f"{r['corpus_docs']} generated documents, {local['chunks']} chunks; {r['cpu']}", "",
             "| executor | cluster start s | clean s | chunk s | encode s | clean+chunk+encode s "
             "| vs local |", "|---|---|---|---|---|---|---|"]
    base = sum(local[s] for s in SHARDED)
    for name, t in r["throughput"].items():
        total = sum(t[s] for s in SHARDED)
        lines.append(f"| {name} | {t['cluster_start']} | {t['clean']} | {t['chunk']} | "
                     f"{t['encode']} | {total:.2f} | {total / base:.2f}x |")
    lines += ["", "| chunks | driver peak RSS MB | clean+chunk+encode s |", "|---|---|---|"]
    for row in r["driver_rss"]:
        lines.append(f"| {row['chunks']} | {row['peak_rss_mb']} | "
                     f"{sum(row['seconds'][s] for s in SHARDED):.1f} |")
    if len(r["driver_rss"]) > 1:
        a, b = r["driver_rss"][0], r["driver_rss"][-1]
        lines.append(f"\ndriver RSS {b['chunks']} vs {a['chunks']} chunks: "
                     f"{b['peak_rss_mb'] / a['peak_rss_mb']:.2f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chunks", type=int, default=3000)
    parser.add_argument("--rss", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/out")
    args = parser.parse_args()
    from benchmarks.corpus import generate

    with tempfile.TemporaryDirectory(prefix="embedpipe-dask-") as tmp:
        corpus = Path(tmp) / "corpus"
        info = generate(corpus, args.chunks, REPO / "data/sample")
        report = {"cpu": cpu_label(), "corpus_docs": info["docs"],
                  "throughput": throughput(corpus, Path(tmp)),
                  "driver_rss": [driver_rss(n, Path(tmp)) for n in args.rss]}
    save(args.out, f"dask-{args.chunks}", report, markdown(report))


if __name__ == "__main__":
    main()
