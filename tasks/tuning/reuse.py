"""Nightly runs stay incremental: a tuned model (and its gate verdict) is kept until the chunks
have changed past `finetune.retrain_churn` since it was trained, as the index keeps its
trained IVF under `index.retrain_growth`. The previous output is read from, and copied out of,
the stage's own folder.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.core.catalog import FINETUNE_CARD, FINETUNE_PAIRS, FINETUNE_TRAINED, MANIFEST
from tasks.core.fingerprint import sha256_text
from tasks.core.io import StageOutput, read_manifest


def chunk_keys(chunks: pa.Table) -> list[str]:
    """sha256 of each distinct chunk text, sorted."""
    return sorted({sha256_text(t or "") for t in chunks.column("text").to_pylist()})


def churn(before: set[str], now: set[str]) -> float:
    """Texts added or removed (a changed text is both) per text trained on."""
    return len(before ^ now) / max(len(before), 1)


def previous_training(out_dir: Path, decided_by: dict[str, Any], keys: list[str],
                      limit: float) -> tuple[dict[str, Any], float] | None:
    """(the previous manifest, churn) when the previous output was trained with the same
    params and base model (its manifest's `decided_by`) on chunks that changed by at most
    `limit` since; else None."""
    try:
        prev = read_manifest(out_dir, "finetune")
    except ValueError:
        return None
    trained = out_dir / FINETUNE_TRAINED.name
    if prev.get("decided_by") != decided_by or "gate" not in prev or not trained.is_file():
        return None
    share = churn(set(pq.read_table(trained).column("text_key").to_pylist()), set(keys))
    return (prev, share) if share <= limit else None


def keep_previous(out_dir: Path, out: StageOutput, prev: dict[str, Any], share: float
                  ) -> dict[str, Any]:
    """Copy the previous output into `out` (its model folder hard-linked, its tables
    restamped); the card says it was kept, and why. Returns the card."""
    for path in sorted(out_dir.iterdir()):
        if path.is_dir():
            shutil.copytree(path, out.path(path.name), copy_function=_link)
        elif path.name in (FINETUNE_PAIRS.name, FINETUNE_TRAINED.name):
            out.write_table(path.name, pq.read_table(path))
        elif path.name != MANIFEST:
            shutil.copy2(path, out.path(path.name))
    card = json.loads((out_dir / FINETUNE_CARD.name).read_text(encoding="utf-8"))
    card["kept"] = {"from": prev["fingerprint"], "churn": round(share, 6)}
    out.write_json(FINETUNE_CARD, card)
    return card


def _link(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
