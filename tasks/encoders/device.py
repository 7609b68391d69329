"""Where and how the encoder runs on this machine: device, backend and precision."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

from tasks.core.config import EXPORTED_BACKENDS, EncodeConfig, precision_problem


def _no_gpu_driver() -> bool:
    """Linux with neither NVIDIA's nor AMD's kernel driver: no CUDA/ROCm device, and no MPS
    off macOS, found without importing torch (about a second)."""
    return sys.platform == "linux" and not any(
        Path(p).exists() for p in ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/kfd"))


def pick_device(requested: str) -> str:
    """'auto' -> cuda, then mps, then cpu; an explicit device must be present."""
    if requested == "cpu" or (requested == "auto" and _no_gpu_driver()):
        return "cpu"
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
    """Resolve `auto` device/backend/precision on this machine; refuse what cannot run.
    Backend openai runs on the server: device and precision are both reported as 'api'."""
    if cfg.backend == "openai":
        return Runtime("api", "openai", "api")
    device = pick_device(cfg.device)
    backend = cfg.backend
    if backend == "auto":
        backend = "openvino" if device == "cpu" else "torch"
    precision = cfg.precision
    if precision == "auto":
        precision = ("int8" if backend in EXPORTED_BACKENDS else "fp16" if device == "cuda"
                     else "fp32")
    if backend in EXPORTED_BACKENDS and device != "cpu":
        raise ValueError(f"encode.backend: {backend} runs on the CPU here; device is {device!r} "
                         f"(use encode.backend: torch or encode.device: cpu)")
    problem = precision_problem(backend, precision)
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
