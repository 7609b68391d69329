"""What the label-free search choice costs inside the index stage, as the corpus grows.

    python -m benchmarks.probe_cost --chunks 59000 --keep /tmp/probe-cost
    python -m benchmarks.probe_cost --workspaces /tmp/corpora/ws/python-docs ...

A corpus from `benchmarks.corpus.generate` (its BEIR labels set aside: `search.labels_choose`
false, so the probes choose), built through dedup once (kept under `--keep`, with its vector
cache, so a second run starts at the index stage), then the index stage run `--repeat`
times, each in a fresh process: its seconds and the card's `probe_seconds` (the search
choice, from reading the chunk table and drawing the probes to the winner; the texts it
embeds are read from the vector cache, where encode embedded them ahead). Then what embedding
them ahead costs the encode stage, apart. The issue's target: probe scoring at most 10% of
the index stage.
Writes benchmarks/out/probe-cost-<chunks>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.report import cpu_label, save
from benchmarks.workspaces import add_workspace_args, generated_workspace, measured_workspaces

REPO = Path(__file__).resolve().parents[1]
BEFORE_INDEX = ("ingest", "clean", "chunk", "finetune", "encode", "reduce", "dedup")


def prepare(base: Path, n_chunks: int) -> Path:
    """The workspace of a generated corpus of about `n_chunks`, built through dedup, its BEIR
    labels set aside (the probes choose) and its vector cache beside it."""
    return generated_workspace(base, n_chunks, BEFORE_INDEX, {
        "search.labels_choose": False, "paths.vector_cache": str(base / "vector-cache")})


def index_once(ws: Path) -> dict[str, Any]:
    """The index stage in a fresh process: its seconds and the card's search choice."""
    code = ("import json; from benchmarks.report import timed_stages; "
            f"print(json.dumps(timed_stages({str(ws)!r}, ['index'])))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True,
                         capture_output=True, text=True)
    seconds = json.loads(out.stdout.strip().splitlines()[-1])["index"]
    choice = json.loads((ws / "data/07_index/card.json").read_text())["search_choice"]
    return {"index_seconds": seconds, "probe_seconds": choice["probe_seconds"],
            "probes": choice["probes"], "winner": choice["winner"]}


AHEAD = """
import json, tempfile, time
from pathlib import Path
from tasks.core.config import load_params
from tasks.core.runtime import start_stage
from tasks.encode import embed_ahead
from tasks.encoders.loading import encoder_for
from tasks.encoders.tuned import chosen_space
run = start_stage("encode", {ws!r})
cfg, model, _ = chosen_space(run.params.encode, run.input_dirs["finetune"])
encoder_for(cfg).encode(["warm up"])  # loaded already when encode runs it
with tempfile.TemporaryDirectory() as cache:
    started = time.perf_counter()
    n = embed_ahead(run, cfg, Path(cache), model["fingerprint"], model["dim"])
    print(json.dumps({{"texts": n, "seconds": round(time.perf_counter() - started, 3)}}))
"""


def ahead_once(ws: Path) -> dict[str, Any]:
    """What embedding ahead costs the encode stage (the model loaded already): drawing the
    texts and embedding them all into an empty cache, in a fresh process."""
    out = subprocess.run([sys.executable, "-c", AHEAD.format(ws=str(ws))], cwd=REPO,
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def markdown(report: dict[str, Any]) -> str:
    lines = [f"Search choice on label-free probes inside the index stage; {report['cpu']}.", "",
             "| corpus | run | index stage s | probe scoring s | share | probes | winner |",
             "|---|---|---|---|---|---|---|"]
    for r in report["sizes"]:
        for i, run in enumerate(r["runs"], 1):
            share = run["probe_seconds"] / run["index_seconds"]
            lines.append(f"| {r['chunks']} | {i} | {run['index_seconds']} | "
                         f"{run['probe_seconds']} | {share:.1%} | {run['probes']} | "
                         f"{run['winner']} |")
        lines.append(f"| {r['chunks']} | median share | | | {r['median_share']:.1%} | | |")
    lines += ["", "Embedded ahead by the encode stage (drawing them and embedding all into an "
              "empty cache, the model loaded): " + ", ".join(
                  f"{r['chunks']}: {r['ahead']['texts']} texts in "
                  f"{r['ahead']['seconds']} s" for r in report["sizes"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_workspace_args(parser, "through dedup (search_corpora's --keep folder holds them "
                       "under ws/)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    named = measured_workspaces(parser, args, prepare)
    sizes = []
    for name, ws in named:
        runs = [index_once(ws) for _ in range(args.repeat)]
        sizes.append({"chunks": name, "runs": runs, "median_share": round(statistics.median(
            r["probe_seconds"] / r["index_seconds"] for r in runs), 4),
            "ahead": ahead_once(ws)})
    report = {"cpu": cpu_label(), "sizes": sizes}
    save(args.out, "probe-cost-" + "-".join(name for name, _ in named), report,
         markdown(report))


if __name__ == "__main__":
    main()
