"""The encoder object for an encode config: a SentenceTransformer, the OpenVINO or ONNX
export, or the
client of an OpenAI-compatible server, loaded once per process."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from tasks.core.config import EncodeConfig
from tasks.core.memory import release_freed_memory
from tasks.encoders.device import Runtime, runtime_for
from tasks.encoders.model import (
    LOAD_LOCK,
    effective_max_seq_length,
    files_digest,
    load_tokenizer,
    resolve_model_path,
    token_counter,
)
from tasks.encoders.openai_api import (
    EmbeddingsClient,
    OpenAIEncoder,
    api_settings,
    probe_dimension,
)


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
    model.default_prompt_name = None  # prompts are applied as prefixes, the same on every backend
    if precision in ("fp16", "bf16"):
        model.to(torch.float16 if precision == "fp16" else torch.bfloat16)
    model.eval()
    return model


@lru_cache(maxsize=2)
def load_encoder(name: str, revision: str | None, max_seq_length: int, runtime: Runtime) -> Any:
    """The encoder for `runtime`: a SentenceTransformer, or the OpenVINO or onnxruntime
    export."""
    if runtime.backend == "torch":
        return load_torch_encoder(name, revision, runtime.device, max_seq_length,
                                  runtime.precision)
    if runtime.backend == "openvino":
        from tasks.encoders.openvino import load_openvino_encoder as load  # noqa: PLC0415
    else:
        from tasks.encoders.onnx import load_onnx_encoder as load  # noqa: PLC0415
    folder = resolve_model_path(name, revision)
    # the PyTorch reference checks a new export once: loaded uncached, so it is freed after
    return load(folder, files_digest(folder), runtime.precision, max_seq_length,
                load_tokenizer(name, revision),
                lambda: load_torch_encoder.__wrapped__(name, revision, "cpu", max_seq_length))


def release_local_encoders() -> None:
    """Let go of the local models loaded so far (PyTorch, OpenVINO, ONNX Runtime): after
    encoding 3,000 chunks a process held 609 MB, 487 MB once OpenVINO handed back its
    activations (`release_memory`) and 340 MB with the model dropped (docs/speed.md); the
    short queries of the stages after encode do not need it kept, and the next
    `encoder_for` loads it again (a cached export: about 0.5 s).
    A model still referenced elsewhere lives on. Safe since no Python runs on OpenVINO's
    threads (`openvino.OpenVinoEncoder.encode`): dropping a model soon after it ran used to
    abort the process at random. What they held is handed back to the system at once
    (`release_freed_memory`), before the caller's next work takes its place."""
    load_encoder.cache_clear()
    load_torch_encoder.cache_clear()
    release_freed_memory()


@lru_cache(maxsize=4)
def load_api_encoder(cfg: EncodeConfig, max_seq_length: int) -> OpenAIEncoder:
    """The client of the server `cfg` names; requests sized with encode.model's tokenizer."""
    settings = api_settings(cfg)
    return OpenAIEncoder(EmbeddingsClient(settings), probe_dimension(settings),
                         token_counter(cfg.model, cfg.revision, max_seq_length),
                         cfg.api_batch_tokens, cfg.api_concurrency)


def encoder_for(cfg: EncodeConfig) -> Any:
    """Load the encoder `cfg` describes (same `.encode` interface for every backend)."""
    folder = resolve_model_path(cfg.model, cfg.revision)
    max_seq_length = effective_max_seq_length(cfg, folder)
    with LOAD_LOCK:  # the first caller loads, threads beside it wait and share it
        if cfg.backend == "openai":
            return load_api_encoder(cfg, max_seq_length)
        return load_encoder(cfg.model, cfg.revision, max_seq_length, runtime_for(cfg))
