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

import pyarrow.parquet as pq

from benchmarks.report import cpu_label, save, timed_stages
from benchmarks.workspaces import add_workspace_args, generated_workspace, measured_workspaces

REPO = Path(__file__).resolve().parents[1]
UPSTREAM = ("01_ingest", "02_clean", "03_chunk")


def prepare(base: Path, n_chunks: int) -> Path:
    """The workspace of a generated corpus of about `n_chunks`, built through chunk."""
    return generated_workspace(base, n_chunks, ("ingest", "clean", "chunk"))


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
    add_workspace_args(parser, "at least through chunk")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    runs = {name: {"chunks": pq.read_metadata(ws / "data/03_chunk/chunks.parquet").num_rows,
                   **finetune_once(ws)} for name, ws in measured_workspaces(parser, args, prepare)}
    report = {"cpu": cpu_label(), "load_average": os.getloadavg(), "runs": runs}
    save(args.out, "finetune-cost-" + "-".join(runs), report, markdown(report))


if __name__ == "__main__":
    main()
