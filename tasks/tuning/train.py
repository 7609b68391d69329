"""Training with sentence-transformers' own `SentenceTransformerTrainer`: seeded, on CUDA when
present, with the trainer's progress bar (and ETA) on a terminal.

The step count alone decides the model: the learning-rate schedule is planned for the steps
that will run, and they all run. `finetune.max_minutes` is a guard, never a stop: from the
measured pace of the first steps it refuses a training that would not fit, and it aborts one
that runs past it, in both cases before a model is written. So a loaded machine gives the
same model as an idle one, later or not at all.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from tasks.core.config import FinetuneConfig

log = logging.getLogger(__name__)
WARMUP_SHARE = 0.1
LOG_EVERY = 10  # steps between two recorded losses
MINI_BATCH = 32  # texts per forward pass of the cached (GradCache) losses
PACE_STEPS = 3  # steps timed before the guard projects the whole training
Clock = Callable[[], float]


class TrainingTooSlow(RuntimeError):
    """The planned steps do not fit `finetune.max_minutes` on this machine."""


@dataclass
class TrainResult:
    """What training did: steps, seconds, why that many, the losses it logged."""

    steps: int
    planned_steps: int
    seconds: float
    stopped_by: str
    losses: list[dict[str, float]] = field(default_factory=list)


def planned_steps(n_pairs: int, cfg: FinetuneConfig) -> int:
    """Steps of one epoch over the pairs, at most `finetune.max_steps`."""
    return max(1, min(cfg.max_steps, math.ceil(n_pairs / cfg.batch_size)))


def prefer_passive_openmp() -> str:
    """Let OpenMP threads sleep, not spin, while they wait for each other, unless the user
    chose otherwise (`OMP_WAIT_POLICY`). Returns the policy in force.

    On a machine shared with other work, PyTorch's spinning threads burnt about three times
    the CPU of a training step (docs/finetune.md). OpenMP reads the setting when torch loads,
    so this runs before torch is imported; after that it only reports.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return os.environ.get("OMP_WAIT_POLICY", "default (torch loaded first)")


def too_slow(cfg: FinetuneConfig, done: int, planned: int, elapsed: float,
             pace: float) -> str | None:
    """Why the training must stop now (it would not fit `max_minutes`), or None. `pace`:
    seconds a step, measured; `elapsed`: seconds since training began."""
    budget = cfg.max_minutes * 60
    eta = elapsed + pace * (planned - done)
    if eta <= budget:
        return None
    fit = max(1, int(budget // max(pace, 1e-9)))
    return (f"finetune: {planned} steps would take about {eta / 60:.1f} minutes here "
            f"({pace:.1f} s a step over steps 1-{done}), past finetune.max_minutes "
            f"{cfg.max_minutes:g}; no model was written. Lower finetune.max_steps (about {fit} "
            f"fit) or raise finetune.max_minutes: the clock never shortens a training")


def _callbacks(cfg: FinetuneConfig, result: TrainResult, clock: Clock) -> list[Any]:
    """A guard that raises `TrainingTooSlow` once the projected time passes `max_minutes`
    (judged from step `PACE_STEPS` on, or at once past it), and a logger of the losses."""
    from transformers import TrainerCallback  # noqa: PLC0415

    started = clock()

    class Guard(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            done, elapsed = state.global_step, clock() - started
            if done >= min(PACE_STEPS, result.planned_steps) or elapsed > cfg.max_minutes * 60:
                why = too_slow(cfg, done, result.planned_steps, elapsed, elapsed / done)
                if why is not None:
                    raise TrainingTooSlow(why)
            return control

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
                   **kw: Any) -> Any:
            if logs and "loss" in logs:
                result.losses.append({"step": state.global_step,
                                      "loss": round(float(logs["loss"]), 5)})
            return control

    return [Guard()]


def make_loss(model: Any, guide: Any, cfg: FinetuneConfig) -> Any:
    """The loss `finetune.loss` names: MNRL, or GISTEmbed guided by the frozen base. Their
    cached (GradCache) forms, which give the same gradients in the memory of `MINI_BATCH`
    texts but pay an extra forward pass (1.4x a step), only for batches larger than that."""
    from sentence_transformers.sentence_transformer import losses  # noqa: PLC0415

    cached = cfg.batch_size > MINI_BATCH
    if cfg.loss == "gist":
        return (losses.CachedGISTEmbedLoss(model, guide, mini_batch_size=MINI_BATCH) if cached
                else losses.GISTEmbedLoss(model, guide))
    return (losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=MINI_BATCH)
            if cached else losses.MultipleNegativesRankingLoss(model))


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


def train_model(base: Path, dataset: Any, cfg: FinetuneConfig, device: str, out: Path,
                clock: Clock = time.monotonic) -> TrainResult:
    """Fine-tune the model in folder `base` on `dataset` for the planned steps and save it
    to `out` (a sentence-transformers folder with the base's own max_seq_length, without
    the generated model card, which records the training time). `TrainingTooSlow` when the
    steps do not fit `finetune.max_minutes` by `clock`; nothing is saved then."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    prefer_passive_openmp()
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
            loss=make_loss(model, guide, cfg), callbacks=_callbacks(cfg, result, clock))
        state = trainer.train()
    result.steps = int(state.global_step)
    result.seconds = round(time.perf_counter() - started, 2)
    model.max_seq_length = own_length
    model.save(str(out), create_model_card=False)
    log.info("finetune: %d steps in %.1f s (%s)", result.steps, result.seconds,
             result.stopped_by)
    return result
