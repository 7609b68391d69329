"""The CPU's encode ceiling: model FLOPs per token x the vector units' peak FLOP/s.

FLOPs per token of a BERT-style encoder with L layers, hidden size h, feed-forward size i, at
mean sequence length s (a multiply-add is 2 FLOPs):
    L * (2 * (4*h*h + 2*h*i) + 4*s*h)
(the Q/K/V/output projections and the feed-forward, plus attention scores and context;
embeddings, layer norms and pooling are small and left out).
Peak FLOP/s = cores x clock x FLOP per cycle per core, with two FMA pipes of the vector width
the CPU flags show: AVX-512 on Intel 2 x 16 lanes x 2 = 64; AVX-512 on AMD Zen 4 (executed as
2 x 256 bit) and AVX2+FMA 2 x 8 x 2 = 32. int8 with VNNI (vpdpbusd: 4 multiply-adds per 32-bit
lane) is 4x the fp32 rate. The clock is /proc/cpuinfo's "cpu MHz" (nominal on a VM).
A measured fp32 GEMM rate (torch.mm, 2048 x 2048) is reported beside it as what is reachable.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def flops_per_token(model_folder: Path, seq_len: float) -> float:
    cfg = json.loads((model_folder / "config.json").read_text(encoding="utf-8"))
    layers, h = cfg["num_hidden_layers"], cfg["hidden_size"]
    inter = cfg.get("intermediate_size", 4 * h)
    return layers * (2 * (4 * h * h + 2 * h * inter) + 4 * seq_len * h)


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def cpu_peak() -> dict[str, Any]:
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    amd = "AMD" in info.get("vendor_id", "")
    if "avx512f" in flags and not amd:
        per_cycle = 64
    elif "avx2" in flags and "fma" in flags or "avx512f" in flags:
        per_cycle = 32
    else:
        per_cycle = 8
    cores = len(os.sched_getaffinity(0))
    ghz = float(info.get("cpu MHz", "0") or 0) / 1000
    fp32 = cores * ghz * per_cycle
    int8 = fp32 * 4 if "avx512_vnni" in flags or "avx_vnni" in flags else fp32 * 2
    return {"cores": cores, "ghz": round(ghz, 3), "fp32_flop_per_cycle": per_cycle,
            "fp32_peak_gflops": round(fp32, 1), "int8_peak_gops": round(int8, 1),
            "isa": "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "sse"}


def measured_gemm_gflops(n: int = 2048, seconds: float = 2.0) -> float:
    import torch  # noqa: PLC0415

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        torch.mm(a, b)
        done += 1
    return round(2 * n**3 * done / (time.perf_counter() - started) / 1e9, 1)


def encode_ceiling(model_folder: Path, seq_len: float, tokens_per_s: dict[str, float]
                   ) -> dict[str, Any]:
    """Ceiling tokens/s (fp32 peak, int8 peak, measured GEMM) and each side's fraction."""
    peak = cpu_peak()
    fpt = flops_per_token(model_folder, seq_len)
    gemm = measured_gemm_gflops()
    ceilings = {"fp32_peak": peak["fp32_peak_gflops"] * 1e9 / fpt,
                "int8_peak": peak["int8_peak_gops"] * 1e9 / fpt,
                "fp32_gemm_measured": gemm * 1e9 / fpt}
    return {"cpu": peak, "gemm_gflops": gemm, "mean_seq_len": round(seq_len, 1),
            "mflops_per_token": round(fpt / 1e6, 2),
            "ceiling_tokens_per_s": {k: round(v) for k, v in ceilings.items()},
            "fraction": {side: {k: round(t / v, 3) for k, v in ceilings.items()}
                         for side, t in tokens_per_s.items()}}
