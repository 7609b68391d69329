"""Config hashes chained through the stages: sha256 of canonical JSON, no timestamps."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel


def canonical_json(obj: Any) -> str:
    """Key-sorted, compact JSON; pydantic models are dumped in JSON mode first."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_text(text: str) -> str:
    """Hex sha256 of UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of raw bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def stage_fingerprint(
    stage: str,
    params: BaseModel | dict[str, Any],
    inputs: dict[str, str],
    facts: dict[str, Any] | None = None,
) -> str:
    """Fingerprint of one stage output; stages call `registry.fingerprint`, which passes
    exactly what the registry declares.

    Args:
        stage: stage name.
        params: the params that decide the output.
        inputs: upstream stage name -> that output's fingerprint.
        facts: anything else that decides the output (model fingerprint, corpus digest).
    """
    if isinstance(params, BaseModel):
        params = params.model_dump(mode="json")
    payload = {"stage": stage, "params": params, "inputs": inputs, "facts": facts or {}}
    return sha256_text(canonical_json(payload))
