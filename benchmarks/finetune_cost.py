"""What the finetune stage costs at the project's defaults as the corpus grows: pairs, mining,
training and the whole stage, with the gate's verdict.

    python -m benchmarks.finetune_cost --chunks 59000 --keep /tmp/finetune-cost
    python -m benchmarks.finetune_cost --workspaces /tmp/probe-cost/ws-59000

A corpus from `benchmarks.corpus.generate` built through chunk (kept under `--keep`), or a
workspace built at least through chunk (its ingest, clean and chunk outputs are linked into a
scratch workspace beside it, so it is not changed); then the finetune stage with
`finetune.enabled: true` and every other finetune key at the project's default (whatever the
workspace's params.yaml says). The issue's target:
at most 20 minutes of training on 2 CPU cores for a 60k-chunk corpus.
Writes benchmarks/out/finetune-cost-<name>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import Any

from benchmarks.report import cpu_label, save, timed_stages

REPO = Path(__file__).resolve().parents[1]
UPSTREAM = ("01_ingest", "02_clean", "03_chunk")


def prepare(base: Path, n_chunks: int) -> Path:
    """The workspace of a generated corpus of about `n_chunks`, built through chunk."""
    from benchmarks.corpus import generate
    from tasks.core.params_file import write_overrides

    ws = base / f"ws-{n_chunks}"
    if not (ws / "data/03_chunk/_manifest.json").exists():
        generate(base / f"corpus-{n_chunks}", n_chunks, REPO / "data" / "sample")
        ws.mkdir(parents=True, exist_ok=True)
        (ws / "params.yaml").write_text((REPO / "params.yaml").read_text())
        write_overrides(ws / "params.yaml", {"ingest.source": str(base / f"corpus-{n_chunks}")})
        timed_stages(ws, ("ingest", "clean", "chunk"))
    return ws


def finetune_once(ws: Path) -> dict[str, Any]:
    """The finetune stage, on, in a scratch copy of `ws` (its upstream outputs linked)."""
    from tasks.core.config import FinetuneConfig
    from tasks.core.params_file import write_overrides

    scratch = ws.parent / f"{ws.name}-finetune"
    shutil.rmtree(scratch, ignore_errors=True)
    for folder in UPSTREAM:
        shutil.copytree(ws / "data" / folder, scratch / "data" / folder, copy_function=os.link)
    shutil.copy(ws / "params.yaml", scratch / "params.yaml")
    defaults = FinetuneConfig().model_dump(mode="json")  # whatever the workspace had
    write_overrides(scratch / "params.yaml", {f"finetune.{k}": v for k, v in defaults.items()}
                    | {"finetune.enabled": True})
    seconds = timed_stages(scratch, ["finetune"])["finetune"]
    card = json.loads((scratch / "data/03_finetune/card.json").read_text())
    return {"stage_seconds": seconds, "pairs": card["pairs"], "kinds": card["kinds"],
            "documents": card["documents"], "mining_seconds": card["mining_seconds"],
            "steps": card["steps"], "training_minutes": card["minutes"],
            "gate": card["gate"]["reason"], "use": card["gate"]["use"]}


def markdown(r: dict[str, Any]) -> str:
    lines = [f"The finetune stage at its defaults; {r['cpu']}.", "",
             "| corpus | chunks | pairs | mining s | steps | training min | stage min | gate |",
             "|---|---|---|---|---|---|---|---|"]
    for name, m in r["runs"].items():
        lines.append(f"| {name} | {m['chunks']} | {m['pairs']} | {m['mining_seconds']} | "
                     f"{m['steps']} | {m['training_minutes']} | "
                     f"{m['stage_seconds'] / 60:.1f} | {m['use']}: {m['gate']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, nargs="+", default=[59_000])
    parser.add_argument("--keep", type=Path, help="where the generated corpora are built")
    parser.add_argument("--workspaces", type=Path, nargs="+", default=[],
                        help="workspaces built through chunk, measured instead")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not args.workspaces and args.keep is None:
        parser.error("--keep is needed to build the generated corpora")
    named = [(ws.name, ws) for ws in args.workspaces] or [
        (str(n), prepare(args.keep, n)) for n in args.chunks]
    runs = {}
    for name, ws in named:
        import pyarrow.parquet as pq

        chunks = pq.read_metadata(ws / "data/03_chunk/chunks.parquet").num_rows
        runs[name] = {"chunks": chunks, **finetune_once(ws)}
    report = {"cpu": cpu_label(), "load_average": os.getloadavg(), "runs": runs}
    save(args.out, "finetune-cost-" + "-".join(runs), report, markdown(report))


if __name__ == "__main__":
    main()
