"""What the ONNX Runtime and OpenVINO backends share: pooling, the thread count, the check of
an export against the PyTorch model, and the cache of exports.

Exports are cached per key (model files, precision, recipe, library versions) under
`cache_root()/<kind>` (`$EMBEDPIPE_CACHE_DIR`, default `~/.cache/embedpipe`). A new export is
checked against the PyTorch model on `PROBES` and refused below `MIN_COSINE`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from filelock import FileLock

from tasks.core.config import cache_root
from tasks.core.fingerprint import canonical_json, sha256_file, sha256_text

log = logging.getLogger(__name__)
# An export whose vectors stray further from PyTorch's on PROBES is refused. Very short
# inputs ("Ok.") move most under int8 (0.97 for all-MiniLM-L6-v2); chunk-length texts stay
# above 0.98 (tests/test_cpu_backends.py checks every chunk of the sample corpus).
MIN_COSINE = 0.95
MIN_MEAN_COSINE = 0.98
PROBES = [
    "The quick brown fox jumps over the lazy dog.",
    "Neutron stars are the collapsed cores of massive stars.",
    "Quarterly revenue rose 12% while operating costs fell.",
    "def add(a, b): return a + b",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen. " * 6,
    "Ok.",
    "Der Hund schläft im Garten, während die Katze spielt.",
    "A table: name | price | stock; apples | 3 | 10; pears | 4 | 0",
    "Inflation expectations anchor long-term interest rates in most central bank models, "
    "and credibility matters more than any single decision.",
    "How do I reset my password?",
]


class Encoder(Protocol):
    """The subset of SentenceTransformer embedpipe calls."""

    def encode(self, sentences: list[str], batch_size: int = 32,
               normalize_embeddings: bool = False) -> np.ndarray: ...


def pool(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """(batch, seq, d) token states -> (batch, d) sentence vectors, padding ignored."""
    m = mask[..., None].astype(hidden.dtype)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return np.where(m > 0, hidden, -np.inf).max(axis=1)
    return (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)


def cpu_threads() -> int:
    """Cores this process may use: its CPU affinity, capped by OMP_NUM_THREADS when set (a
    Dask worker's nanny sets it to the worker's share, so workers do not oversubscribe)."""
    cores = len(os.sched_getaffinity(0))
    limit = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, min(cores, int(limit))) if limit.isdigit() else cores


def verify(encoder: Encoder, reference: Any, backend: str) -> dict[str, float]:
    """Cosine of the export's vectors to the PyTorch model's on `PROBES`; refuse if too far."""
    a = encoder.encode(PROBES, batch_size=4, normalize_embeddings=True)
    b = reference.encode(PROBES, batch_size=4, normalize_embeddings=True, convert_to_numpy=True)
    cos = (a * b.astype("float32")).sum(axis=1)
    report = {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}
    if report["min_cosine"] < MIN_COSINE or report["mean_cosine"] < MIN_MEAN_COSINE:
        raise ValueError(
            f"encode.backend: the {backend} export strays from the PyTorch model (cosine min "
            f"{report['min_cosine']:.4f}, mean {report['mean_cosine']:.4f}; needs >= "
            f"{MIN_COSINE} and >= {MIN_MEAN_COSINE}); use encode.precision: fp32 or "
            f"encode.backend: torch")
    return report


def export_key(files_sha256: str, precision: str, recipe: int, libraries: tuple[str, ...],
               **extra: Any) -> str:
    """Identity of an export: weights, precision, recipe, `extra` (int8's calibration) and
    the versions of the `libraries` that made it and run it."""
    from importlib import metadata  # noqa: PLC0415

    return sha256_text(canonical_json(
        {"files": files_sha256, "precision": precision, "recipe": recipe} | extra
        | {lib: metadata.version(lib) for lib in libraries}))


def cached_export(kind: str, key: str, marker: str, make: Callable[[Path], None],
                  open_encoder: Callable[[Path], Encoder],
                  reference: Callable[[], Any]) -> Encoder:
    """The encoder of the export `key` under `cache_root()/kind`; when the folder lacks its
    `marker` file, `make(folder)` writes it (atomically, one process at a time) and it is
    checked against `reference()` (the PyTorch model) and removed if refused."""
    root = cache_root() / kind
    root.mkdir(parents=True, exist_ok=True)
    target = root / key[:32]
    with FileLock(str(root / f"{key[:32]}.lock")):
        if (target / marker).is_file():
            return open_encoder(target)
        log.info("%s: exporting into %s", kind, target)
        make(target)
        encoder = open_encoder(target)
        try:
            report = verify(encoder, reference(), kind)
        except ValueError:
            shutil.rmtree(target, ignore_errors=True)
            raise
        info = json.loads((target / "export.json").read_text(encoding="utf-8"))
        (target / "export.json").write_text(json.dumps(info | report, indent=2))
        return encoder


CALIBRATION = Path(__file__).with_name("calibration.jsonl")


def calibration_texts() -> list[str]:
    """The fixed texts int8 activation ranges are calibrated on: 192 chunks of the bundled
    sample corpus and 64 short openings of others' sentences, 24 and 8 from each of its
    eight topics (prose, recipes, finance, source code...)."""
    with CALIBRATION.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def calibration_digest() -> str:
    """sha256 of the calibration file: part of an int8 export's identity."""
    return sha256_file(CALIBRATION)
