"""Evaluate's share of a build: a generated corpus through `embedpipe run`, from empty.

    python -m benchmarks.evaluate_share [--families 120] [--filler 1550]
    python -m benchmarks.evaluate_share --chunks 100000

The folder is `benchmarks/families.py`'s (library families and filler notes, one file each),
or with `--chunks` `benchmarks/corpus.py`'s BEIR folder of about that many chunks (planted
queries, so evaluate's labeled retrieval runs too); one `embedpipe run` in a fresh workspace
with an empty vector cache, as a user's first run.
Reports each stage's seconds (the run's own table), evaluate's seconds over ingest → index,
and evaluate's steps (`step_seconds` in its metrics.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.families import generate
from benchmarks.report import cpu_label, save

REPO = Path(__file__).resolve().parents[1]
BUILD = ("ingest", "clean", "chunk", "finetune", "encode", "reduce", "dedup", "index")


def run(tmp: Path, families: int, filler: int, chunks: int | None = None) -> dict[str, Any]:
    from benchmarks.corpus import generate as generate_beir
    from tests.conftest import make_workspace

    ws = make_workspace(tmp / "ws")
    if chunks:
        from tasks.core.params_file import write_overrides

        generate_beir(tmp / "gen/corpus/beir", chunks, ws / "data/sample")
        # the share is the question, not the gate: recombined generated documents are too
        # alike for the label-free probes' default floor
        write_overrides(ws / "params.yaml", {f"evaluate.{k}": None for k in (
            "min_index_recall", "min_probe_recall_at_10", "min_dense_probe_recall_at_10",
            "min_labeled_ndcg_at_10")})
    else:
        generate(tmp / "gen", n_families=families, n_filler=filler,
                 sample_dir=ws / "data/sample", seed=3)
    shutil.rmtree(ws / "data/sample")
    shutil.move(tmp / "gen/corpus", ws / "data/sample")
    files = sum(1 for p in (ws / "data/sample").rglob("*") if p.is_file())
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run([str(Path(sys.executable).parent / "embedpipe"), "run"], cwd=ws,
                          env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"embedpipe run failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    seconds = {line.split()[0]: float(line.split()[2].rstrip("s"))
               for line in done.stdout.splitlines()
               if line.split() and line.split()[0] in (*BUILD, "evaluate", "publish")}
    build = sum(seconds[s] for s in BUILD)
    metrics = json.loads((ws / "data/08_evaluate/metrics.json").read_text())
    return {"files": files, "stage_seconds": seconds, "build_seconds": round(build, 2),
            "evaluate_share": round(seconds["evaluate"] / build, 3),
            "evaluate_steps": metrics["step_seconds"], "machine": cpu_label()}


def markdown(r: dict[str, Any]) -> str:
    lines = [f"# Evaluate's share of a build ({r['files']} files, {r['machine']})", "",
             "| stage | seconds |", "|---|---:|"]
    lines += [f"| {s} | {v:.2f} |" for s, v in r["stage_seconds"].items()]
    lines += ["", f"ingest → index {r['build_seconds']:.2f} s; evaluate "
              f"{r['stage_seconds']['evaluate']:.2f} s = {100 * r['evaluate_share']:.0f}% of it",
              "", "| evaluate step | seconds |", "|---|---:|"]
    lines += [f"| {s} | {v:.2f} |" for s, v in r["evaluate_steps"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--families", type=int, default=120)
    ap.add_argument("--filler", type=int, default=1550)
    ap.add_argument("--chunks", type=int, help="a BEIR corpus of about this many chunks")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/out")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = run(Path(tmp), args.families, args.filler, args.chunks)
    name = f"evaluate_share-{args.chunks}" if args.chunks else "evaluate_share"
    save(args.out, name, report, markdown(report))


if __name__ == "__main__":
    main()
