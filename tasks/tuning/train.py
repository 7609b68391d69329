"""Training with sentence-transformers' own `SentenceTransformerTrainer`: seeded, bounded by
steps and minutes, on CUDA when present, with the trainer's progress bar (and ETA) on a
terminal.

The minutes bound reads a clock, so a run that hits it may stop at another step than a
rerun would; the card records the steps done and why training stopped.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from tasks.core.config import FinetuneConfig

log = logging.getLogger(__name__)
WARMUP_SHARE = 0.1
LOG_EVERY = 10  # steps between two recorded losses


@dataclass
class TrainResult:
    """What training did: steps, seconds, why it stopped, the losses it logged."""

    steps: int
    planned_steps: int
    seconds: float
    stopped_by: str
    losses: list[dict[str, float]] = field(default_factory=list)


def planned_steps(n_pairs: int, cfg: FinetuneConfig) -> int:
    """Steps of one epoch over the pairs, at most `finetune.max_steps`."""
    return max(1, min(cfg.max_steps, math.ceil(n_pairs / cfg.batch_size)))


def _callbacks(cfg: FinetuneConfig, result: TrainResult) -> list[Any]:
    """A callback that stops at `max_minutes` and records the logged losses."""
    from transformers import TrainerCallback  # noqa: PLC0415

    started = time.monotonic()

    class Bound(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            if time.monotonic() - started > cfg.max_minutes * 60:
                result.stopped_by = "max_minutes"
                control.should_training_stop = True
            return control

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
                   **kw: Any) -> Any:
            if logs and "loss" in logs:
                result.losses.append({"step": state.global_step,
                                      "loss": round(float(logs["loss"]), 5)})
            return control

    return [Bound()]


def make_loss(model: Any, guide: Any, cfg: FinetuneConfig) -> Any:
    """The loss `finetune.loss` names: cached MNRL, or GISTEmbed guided by the frozen base."""
    from sentence_transformers.sentence_transformer import losses  # noqa: PLC0415

    mini = min(cfg.batch_size, 32)  # GradCache: memory of 32 texts, gradients of the batch
    if cfg.loss == "gist":
        return losses.CachedGISTEmbedLoss(model, guide, mini_batch_size=mini)
    return losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=mini)


def training_dataset(pairs: pa.Table, negatives: list[str | None] | None,
                     prefixes: tuple[str, str]) -> Any:
    """A `datasets.Dataset` of (anchor, positive[, negative]) with the model's prefixes, as
    the encoder and the query side will apply them."""
    from datasets import Dataset  # noqa: PLC0415

    passage, query = prefixes
    cols = {"anchor": [query + t for t in pairs.column("anchor").to_pylist()],
            "positive": [passage + t for t in pairs.column("positive").to_pylist()]}
    if negatives is not None:
        cols["negative"] = [passage + (t or "") for t in negatives]
    return Dataset.from_dict(cols)


def _arguments(cfg: FinetuneConfig, steps: int, device: str, out: str) -> Any:
    from sentence_transformers.base.sampler import BatchSamplers  # noqa: PLC0415
    from sentence_transformers.sentence_transformer.training_args import (  # noqa: PLC0415
        SentenceTransformerTrainingArguments,
    )

    return SentenceTransformerTrainingArguments(
        output_dir=out, max_steps=steps, per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate, warmup_steps=math.ceil(steps * WARMUP_SHARE),
        seed=cfg.seed, data_seed=cfg.seed, batch_sampler=BatchSamplers.NO_DUPLICATES,
        logging_steps=min(LOG_EVERY, steps), save_strategy="no", report_to=[],
        use_cpu=device == "cpu", dataloader_num_workers=0,
        disable_tqdm=not sys.stderr.isatty(),  # the bar and its ETA, on a terminal only
    )


def train_model(base: Path, dataset: Any, cfg: FinetuneConfig, device: str, out: Path
                ) -> TrainResult:
    """Fine-tune the model in folder `base` on `dataset` and save it to `out` (a
    sentence-transformers folder with the base's own max_seq_length)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415
    from sentence_transformers.sentence_transformer.trainer import (  # noqa: PLC0415
        SentenceTransformerTrainer,
    )

    model = SentenceTransformer(str(base), device=device)
    own_length, model.max_seq_length = model.max_seq_length, cfg.max_seq_length
    guide = SentenceTransformer(str(base), device=device) if cfg.loss == "gist" else None
    steps = planned_steps(len(dataset), cfg)
    result = TrainResult(0, steps, 0.0, "max_steps" if steps == cfg.max_steps else "epoch")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="finetune-") as scratch:
        trainer = SentenceTransformerTrainer(
            model=model, args=_arguments(cfg, steps, device, scratch), train_dataset=dataset,
            loss=make_loss(model, guide, cfg), callbacks=_callbacks(cfg, result))
        state = trainer.train()
    result.steps = int(state.global_step)
    result.seconds = round(time.perf_counter() - started, 2)
    model.max_seq_length = own_length
    model.save(str(out))
    log.info("finetune: %d of %d steps in %.1f s (%s)", result.steps, steps, result.seconds,
             result.stopped_by)
    return result
