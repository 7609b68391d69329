"""finetune: `chunks.parquet` -> `model.json` (which model encode uses, and why), `card.json`,
`pairs.parquet` and, when the gate passes it, the tuned model folder `model-<files digest>`.

Invariant: a held-out share of the documents is never trained on, and the tuned model is
named in `model.json` only when it beats encode.model on them by `finetune.min_gain`.
Off (`finetune.enabled: false`), the output names encode.model and nothing else.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tasks.core.catalog import (
    CHUNKS,
    FINETUNE_CARD,
    FINETUNE_CHOICE,
    FINETUNE_PAIRS,
    FINETUNE_TRAINED,
    TUNED_MODEL_PREFIX,
)
from tasks.core.config import EncodeConfig, FinetuneConfig
from tasks.core.fingerprint import sha256_file, sha256_text
from tasks.core.io import StageOutput
from tasks.core.progress import task_logger
from tasks.core.registry import declared_params, is_neutral
from tasks.core.runtime import StageRun, main, stage_task, start_stage
from tasks.encoders.device import runtime_for
from tasks.encoders.model import (
    effective_max_seq_length,
    files_digest,
    prefixes,
    resolve_model_path,
)
from tasks.tuning.gate import Encode, decide, gate_set, rank_documents, score_rankings
from tasks.tuning.negatives import mine_negatives
from tasks.tuning.pairs import MiningSettings, mine_pairs, pair_counts, split_documents
from tasks.tuning.reuse import chunk_keys, keep_previous, previous_training
from tasks.tuning.train import prefer_passive_openmp, train_model, training_dataset
from tasks.tuning.user_pairs import read_user_pairs

TUNED_SUFFIX = "+finetune"


def base_identity(enc: EncodeConfig) -> dict[str, Any]:
    """The base model: name, revision, weights digest, sequence length, prefixes."""
    folder = resolve_model_path(enc.model, enc.revision)
    passage, query = prefixes(enc)
    return {"name": enc.model, "revision": enc.revision, "files_sha256": files_digest(folder),
            "max_seq_length": effective_max_seq_length(enc, folder),
            "passage_prefix": passage, "query_prefix": query}


def pairs_digest(path: Path | None) -> str | None:
    """sha256 over the user's pairs file, or every file of a BEIR folder (None: no pairs)."""
    if path is None:
        return None
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return sha256_text("\n".join(f"{p.relative_to(path.parent).as_posix()}:{sha256_file(p)}"
                                 for p in files))


def finetune_fingerprint(run: StageRun, facts: dict[str, Any]) -> str:
    """The stage's fingerprint: what the registry declares for it (the finetune group, the
    base model's keys, dedup.threshold, the chunk fingerprint) and its facts (the base
    model's identity, the user's pairs' digest). The one place it is computed."""
    return run.fingerprint(**facts)


def decided_by(run: StageRun, facts: dict[str, Any]) -> dict[str, Any]:
    """What a manifest records as deciding this output (`decided_by`), to compare a previous
    training's against."""
    return {"params": declared_params("finetune", run.params), "facts": facts}


def torch_encoder(folder: Path, enc: EncodeConfig, device: str) -> Encode:
    """(texts, as_queries) -> unit vectors with the model in `folder`, read as encode reads
    the base model (its sequence length and prefixes), in PyTorch fp32."""
    from tasks.encoders.loading import load_torch_encoder  # noqa: PLC0415

    base = resolve_model_path(enc.model, enc.revision)
    model = load_torch_encoder(str(folder), None, device, effective_max_seq_length(enc, base))
    passage, query = prefixes(enc)

    def encode(texts: list[str], as_queries: bool) -> np.ndarray:
        prefix = query if as_queries else passage
        x = model.encode([prefix + t for t in texts], batch_size=enc.batch_size,
                         normalize_embeddings=True, convert_to_numpy=True,
                         show_progress_bar=False)
        return np.ascontiguousarray(x, dtype="float32")

    return encode


def training_pairs(run: StageRun, chunks: pa.Table, cfg: FinetuneConfig, encode: Encode
                   ) -> tuple[pa.Table, list[str | None] | None, set[str], Any, dict]:
    """(pairs, negatives, held-out docs, labelled gate queries, counts): mined and user
    pairs from the training documents, with hard negatives from the training chunks."""
    train, held = split_documents(chunks.column("doc_id").to_pylist(), cfg.holdout, cfg.seed)
    pairs = mine_pairs(chunks, train, MiningSettings(cfg.kinds, cfg.cloze_keep, cfg.max_pairs,
                                                     cfg.seed))
    labeled = None
    if cfg.pairs is not None:
        user, labeled = read_user_pairs(run.root / cfg.pairs, run.root /
                                        run.params.ingest.source, chunks, held, cfg.holdout,
                                        cfg.seed)
        pairs = pa.concat_tables([pairs, user])
    counts: dict[str, Any] = {"documents": {"train": len(train), "held_out": len(held)},
                              "pairs": pairs.num_rows, "kinds": pair_counts(pairs),
                              "labeled_gate_queries": len(labeled.queries) if labeled else 0}
    if pairs.num_rows < 2:
        raise ValueError(f"finetune: {pairs.num_rows} training pairs from {len(train)} "
                         "documents; a corpus this small cannot be fine-tuned on")
    negatives = None
    if cfg.negatives != "none":
        pool = chunks.filter(pa.array([d in train for d in chunks.column("doc_id").to_pylist()]))
        negatives, counts["negatives"] = mine_negatives(
            pairs, pool, cfg.negatives, cfg.seed, run.params.dedup.threshold, encode)
    return pairs, negatives, held, labeled, counts


def tuned_identity(enc: EncodeConfig, folder: Path, base: dict[str, Any], pairs_sha: str,
                   cfg: FinetuneConfig) -> dict[str, Any]:
    """What names a tuned model: its name, folder, base, pairs and params (less the keys
    that cannot change it, `max_minutes`)."""
    params = {k: v for k, v in cfg.model_dump(mode="json").items()
              if not is_neutral(f"finetune.{k}")}
    return {"name": enc.model + TUNED_SUFFIX, "folder": folder.name,
            "base_files_sha256": base["files_sha256"], "pairs_sha256": pairs_sha,
            "params": params}


def save_tuned(out: StageOutput, train: Callable[[Path], Any]) -> tuple[Path, Any]:
    """Train into the output, then name the folder by its files' digest (computed afresh:
    `files_digest` remembers folders by path)."""
    scratch = out.path(".model-training")
    result = train(scratch)
    digest = files_digest.__wrapped__(scratch)
    folder = out.path(f"{TUNED_MODEL_PREFIX}{digest[:16]}")
    os.replace(scratch, folder)
    return folder, result


def run_finetune(run: StageRun, out: StageOutput, chunks: pa.Table, device: str,
                 omp: str) -> dict[str, Any]:
    """Mine, train, gate; write pairs, card and choice; return the card."""
    cfg, enc = run.params.finetune, run.params.encode
    base, base_folder = base_identity(enc), resolve_model_path(enc.model, enc.revision)
    started = time.perf_counter()
    pairs, negatives, held, labeled, counts = training_pairs(
        run, chunks, cfg, torch_encoder(base_folder, enc, device))
    out.write_table(FINETUNE_PAIRS, pairs.append_column(
        "negative", pa.array(negatives or [None] * pairs.num_rows, pa.string())))
    pairs_sha = sha256_file(out.path(FINETUNE_PAIRS))
    mined_s = time.perf_counter() - started
    folder, result = save_tuned(out, lambda dest: train_model(
        base_folder, training_dataset(pairs, negatives, prefixes(enc)), cfg, device, dest))
    gate = gate_set(chunks, held, cfg.gate_queries, cfg.gate_chunks, cfg.seed, labeled)
    ranked = {side: rank_documents(torch_encoder(path, enc, device), gate)
              for side, path in (("base", base_folder), ("tuned", folder))}
    scores = {side: score_rankings(gate, r) for side, r in ranked.items()}
    decision = decide(gate, ranked["base"], ranked["tuned"], cfg.gate_metric, cfg.min_gain,
                      cfg.gate_confidence, cfg.seed)
    tuned = tuned_identity(enc, folder, base, pairs_sha, cfg)
    if decision["use"] != "tuned":
        shutil.rmtree(folder)  # a rejected model is never used; its card stays
    card = {**counts, "device": device, "omp_wait_policy": omp, "loss": cfg.loss,
            "steps": result.steps, "planned_steps": result.planned_steps,
            "stopped_by": result.stopped_by,
            "minutes": round(result.seconds / 60, 3), "mining_seconds": round(mined_s, 2),
            "losses": result.losses, "scores": scores, "gate": decision, "base": base,
            "tuned": tuned | {"kept": decision["use"] == "tuned"}}
    out.write_json(FINETUNE_CARD, card)
    out.write_json(FINETUNE_CHOICE, {"use": decision["use"], "reason": decision["reason"],
                                     "base": base, "tuned": tuned if decision["use"] == "tuned"
                                     else None})
    return card


def check_trainable(enc: EncodeConfig) -> None:
    """Refuse a base model that cannot be trained here (one behind an API)."""
    if enc.backend == "openai":
        raise ValueError("finetune.enabled: encode.backend openai serves vectors from a "
                         "server; fine-tuning needs the model's weights here (a local model)")


def train_or_keep(run: StageRun, out: StageOutput, facts: dict[str, Any]) -> dict[str, Any]:
    """Keep the previous model (and its verdict) while the chunks have changed by at most
    `finetune.retrain_churn` since it was trained; else train and gate a new one. Returns
    the card."""
    cfg, enc = run.params.finetune, run.params.encode
    check_trainable(enc)
    omp = prefer_passive_openmp()  # before the base model loads torch
    chunks = run.read(CHUNKS)
    keys = chunk_keys(chunks)
    prev = previous_training(run.out_dir, decided_by(run, facts), keys, cfg.retrain_churn)
    if prev is not None:
        return keep_previous(run.out_dir, out, *prev)
    device = "cuda" if runtime_for(enc).device == "cuda" else "cpu"
    card = run_finetune(run, out, chunks, device, omp)
    out.write_table(FINETUNE_TRAINED, pa.table({"text_key": pa.array(keys, pa.string())}))
    return card


@stage_task("finetune")
def finetune_task(root: str = ".") -> str:
    """Fine-tune encode.model on the corpus and gate it, or (off) name encode.model."""
    run = start_stage("finetune", root)
    cfg, enc = run.params.finetune, run.params.encode
    user = run.root / cfg.pairs if cfg.enabled and cfg.pairs else None
    facts = {"base_model": base_identity(enc), "user_pairs_sha256": pairs_digest(user)}
    with run.output(finetune_fingerprint(run, facts), cfg) as out:
        if not cfg.enabled:
            out.write_json(FINETUNE_CHOICE, {"use": "base", "base": facts["base_model"],
                                             "reason": "finetune.enabled is false",
                                             "tuned": None})
            out.record(use="base")
        else:
            card = train_or_keep(run, out, facts)
            out.record(use=card["gate"]["use"], pairs=card["kinds"], steps=card["steps"],
                       gate=card["gate"], scores=card["scores"], kept=card.get("kept"))
    choice = "base model" if not cfg.enabled else card["gate"]["use"] + " model"
    reason = "finetune.enabled is false" if not cfg.enabled else card["gate"]["reason"]
    if cfg.enabled and card.get("kept"):
        reason = f"kept from the last training (churn {card['kept']['churn']:.3f}): {reason}"
    task_logger().info("finetune: encode uses the %s (%s) in %.1f s", choice, reason,
                       run.seconds)
    return str(run.out_dir)


if __name__ == "__main__":
    main(finetune_task)
