"""Seconds a fine-tuning step, before and after the speed fixes, side by side on the same
pairs: wall and CPU seconds a step (steps 2 on: the first carries the trainer's set-up).

    nice -n 10 python -m benchmarks.finetune_speed --steps 5 --rounds 2

The pairs are the finetune stage's own (mined from the families corpus, one BM25 hard
negative each) with the stage's training settings (`--batch-size`, `--max-seq-length`).
Variants, each in its own process (OpenMP reads its wait policy when torch loads), run in
turns so a changing machine load falls on all of them:

- `before`: what the stage did until now: the cached (GradCache) MNRL loss at every batch
  size, OpenMP threads spinning while they wait (the library default);
- `after`: plain MNRL where a batch fits one forward pass (`batch_size` <= 32: the same
  gradients without the cached loss's extra forward pass), OpenMP threads that sleep;
- `after-1-thread`: `after` on one thread, which shows what spinning cost on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.families import generate
from benchmarks.report import cpu_label, save, timed_stages

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("before", "after", "after-1-thread")


def mine(base: Path, args: argparse.Namespace) -> Path:
    """The finetune stage's pairs and negatives for the families corpus, as Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.core.config import FinetuneConfig
    from tasks.core.params_file import write_overrides
    from tasks.tuning.negatives import mine_negatives
    from tasks.tuning.pairs import MiningSettings, mine_pairs, split_documents

    generate(base, args.families, args.filler, REPO / "data/sample", args.seed)
    ws = base / "ws"
    ws.mkdir()
    (ws / "params.yaml").write_text((REPO / "params.yaml").read_text())
    write_overrides(ws / "params.yaml", {"ingest.source": str(base / "corpus")})
    timed_stages(ws, ("ingest", "clean", "chunk"))
    chunks = pq.read_table(ws / "data/03_chunk/chunks.parquet")
    cfg = FinetuneConfig(enabled=True)
    train, _ = split_documents(chunks.column("doc_id").to_pylist(), cfg.holdout, cfg.seed)
    pairs = mine_pairs(chunks, train, MiningSettings(cfg.kinds, cfg.cloze_keep, cfg.max_pairs,
                                                     cfg.seed))
    pool = chunks.filter(pa.array([d in train for d in chunks.column("doc_id").to_pylist()]))
    negatives, _ = mine_negatives(pairs, pool, "bm25", cfg.seed, 0.95, None)
    path = base / "pairs.parquet"
    pq.write_table(pairs.append_column("negative", pa.array(negatives, pa.string())), path)
    return path


def worker(variant: str, pairs_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Train `args.steps` steps as `variant` does; wall and CPU seconds of steps 2 on."""
    from tasks.tuning import train

    if variant == "before":
        os.environ.pop("OMP_WAIT_POLICY", None)  # torch loads next: the library default
    else:
        train.prefer_passive_openmp()
    import pyarrow.parquet as pq
    import torch

    from tasks.core.config import DEFAULT_MODEL, FinetuneConfig
    from tasks.encoders.model import resolve_model_path

    if variant == "after-1-thread":
        torch.set_num_threads(1)
    if variant == "before":
        from sentence_transformers.sentence_transformer import losses

        train.make_loss = lambda model, guide, cfg: losses.CachedMultipleNegativesRankingLoss(
            model, mini_batch_size=min(cfg.batch_size, 32))  # the loss the stage used
    marks: list[tuple[float, float]] = []

    def clock() -> float:  # the guard reads it once at the start and after each step
        marks.append((time.monotonic(), time.process_time()))
        return marks[-1][0]

    p = pq.read_table(pairs_path)
    cfg = FinetuneConfig(enabled=True, batch_size=args.batch_size, max_steps=args.steps,
                         max_seq_length=args.max_seq_length, max_minutes=600)
    with tempfile.TemporaryDirectory() as out:
        train.train_model(resolve_model_path(DEFAULT_MODEL), train.training_dataset(
            p.drop(["negative"]), p.column("negative").to_pylist(), ("", "")),
            cfg, "cpu", Path(out) / "model", clock=clock)
    steps = np.diff(np.array(marks[1:]), axis=0)  # steps 2..n
    return {"variant": variant, "threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "library default"),
            "wall_s_per_step": round(float(steps[:, 0].mean()), 2),
            "cpu_s_per_step": round(float(steps[:, 1].mean()), 2)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Mine once, then each variant `rounds` times in turns, each in a fresh process."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="embedpipe-ftspeed-") as tmp:
        pairs = mine(Path(tmp), args)
        for _ in range(args.rounds):
            for variant in VARIANTS:
                cmd = [sys.executable, "-m", "benchmarks.finetune_speed", "--worker", variant,
                       "--pairs", str(pairs), "--steps", str(args.steps),
                       "--batch-size", str(args.batch_size),
                       "--max-seq-length", str(args.max_seq_length)]
                done = subprocess.run(cmd, capture_output=True, text=True, check=True,
                                      env=os.environ | {"HF_HUB_OFFLINE": "1"})
                rows.append(json.loads(done.stdout.strip().splitlines()[-1])
                            | {"load_1min": round(os.getloadavg()[0], 1)})
    return {"cpu": cpu_label(), "settings": vars(args) | {"pairs": None, "out": None},
            "runs": rows, "mean": _means(rows)}


def _means(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out = {}
    for v in VARIANTS:
        mine_ = [r for r in rows if r["variant"] == v]
        out[v] = {k: round(float(np.mean([r[k] for r in mine_])), 2)
                  for k in ("wall_s_per_step", "cpu_s_per_step")}
    return out


def markdown(r: dict[str, Any]) -> str:
    s, m = r["settings"], r["mean"]
    lines = [f"## Fine-tuning step time ({r['cpu']})", "",
             f"batch {s['batch_size']} triplets, max_seq_length {s['max_seq_length']}, "
             f"{s['steps']} steps a run, {s['rounds']} rounds in turns.", "",
             "| variant | wall s/step | CPU s/step | wall vs before |", "|---|---|---|---|"]
    for v in VARIANTS:
        ratio = m["before"]["wall_s_per_step"] / max(m[v]["wall_s_per_step"], 1e-9)
        lines.append(f"| {v} | {m[v]['wall_s_per_step']} | {m[v]['cpu_s_per_step']} | "
                     f"{ratio:.2f}x faster |")
    lines += ["", "Runs: " + "; ".join(f"{x['variant']} {x['wall_s_per_step']} s "
                                        f"(load {x['load_1min']})" for x in r["runs"]), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", type=int, default=60)
    parser.add_argument("--filler", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-seq-length", type=int, default=96)
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--pairs", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--name", default="finetune_speed")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/out")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.pairs, args)))  # noqa: T201
        return
    report = run(args)
    save(args.out, args.name, report, markdown(report))


if __name__ == "__main__":
    main()
