"""Where encode's time goes inside OpenVINO, and why it stays under the CPU's int8 peak.

    python -m benchmarks.encode_profile [--repeats 4]

The default encoder (OpenVINO int8, as encode loads it) runs the bundled calibration texts
(chunks of the sample corpus and short sentence openings: `tasks/encoders/calibration.jsonl`)
`--repeats` times with OpenVINO's per-node performance counters on, batched exactly as encode
batches (`OpenVinoEncoder._batches` / `_padded`, its requests in flight). Per kind of kernel:
its share of the core-seconds, and for the int8 matrix products (the feed-forward and
projection layers, which hold all but `4*s*h` of the FLOPs `benchmarks/ceiling.py` counts) the
rate they reach against the per-core int8 peak. The whole encode's tokens/s is also given as a
fraction of the int8 peak, on real tokens (as the other benchmarks count) and on padded ones.
Writes benchmarks/out/encode_profile.json and .md.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.ceiling import cpu_peak
from benchmarks.report import cpu_label, save

REPO = Path(__file__).resolve().parents[1]


def kind_of(node_type: str, exec_type: str) -> str:
    """A kernel's class: int8 matrix products, the fused attention block, the elementwise
    and normalisation ops left in fp32, or the rest (layout, gathers, shapes)."""
    if node_type.startswith("FullyConnected"):
        return "int8 matrix products" if "8" in exec_type else "fp32 matrix products"
    if node_type == "Subgraph":
        return "attention (fused subgraph)"
    if node_type in ("Add", "MVN", "Multiply", "MulAdd", "Eltwise", "FakeQuantize"):
        return "elementwise + layer norm (fp32)"
    return "other (layout, gather, shapes)"


def profiled_encoder() -> Any:
    """The default encoder, compiled with its own settings plus per-node counters."""
    import openvino as ov  # noqa: PLC0415

    compile_model = ov.Core.compile_model

    def with_counters(self: Any, model: Any, device: str, config: dict | None = None) -> Any:
        return compile_model(self, model, device, {**(config or {}), "PERF_COUNT": True})

    ov.Core.compile_model = with_counters
    try:
        from tasks.core.config import EncodeConfig  # noqa: PLC0415
        from tasks.encoders.loading import encoder_for  # noqa: PLC0415

        return encoder_for(EncodeConfig(device="cpu"))
    finally:
        ov.Core.compile_model = compile_model


def profile(encoder: Any, texts: list[str], batch_size: int = 32) -> dict[str, Any]:
    """Run `texts` as encode would, summing each executed node's real time by kind."""
    import openvino as ov  # noqa: PLC0415

    ids = encoder.tokenizer(texts, truncation="longest_first",
                            max_length=encoder.max_seq_length,
                            return_attention_mask=False)["input_ids"]
    order = np.argsort([-len(t) for t in ids], kind="stable")
    by_kind: Counter[str] = Counter()
    padded = 0
    queue = ov.AsyncInferQueue(encoder.compiled, encoder.requests)

    def done(request: Any, _: Any) -> None:
        for node in request.profiling_info:
            if node.status == node.Status.EXECUTED:
                by_kind[kind_of(node.node_type, node.exec_type)] += (
                    node.real_time.total_seconds())

    queue.set_callback(done)
    started = time.perf_counter()
    for rows, cap in encoder._batches(ids, order, batch_size):
        feeds = encoder._padded([ids[i] for i in rows], None, cap)
        padded += int(feeds["input_ids"].size)
        queue.start_async(feeds)
    queue.wait_all()
    return {"seconds": time.perf_counter() - started, "tokens": sum(len(t) for t in ids),
            "padded_tokens": padded, "core_seconds": dict(by_kind)}


def gemm_flops_per_token(folder: Path) -> float:
    """FLOPs per token of the feed-forward and projection layers alone."""
    import json  # noqa: PLC0415

    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    h, inter = cfg["hidden_size"], cfg.get("intermediate_size", 4 * cfg["hidden_size"])
    return cfg["num_hidden_layers"] * 2 * (4 * h * h + 2 * h * inter)


def run(repeats: int) -> dict[str, Any]:
    from benchmarks.ceiling import flops_per_token  # noqa: PLC0415
    from tasks.core.config import EncodeConfig  # noqa: PLC0415
    from tasks.encoders.local_runtime import calibration_texts  # noqa: PLC0415
    from tasks.encoders.model import resolve_model_path  # noqa: PLC0415

    encoder = profiled_encoder()
    texts = calibration_texts()
    profile(encoder, texts[:64])  # warm up: shapes prepared, caches filled
    runs = [profile(encoder, texts) for _ in range(repeats)]
    seconds = sum(r["seconds"] for r in runs)
    tokens, padded = sum(r["tokens"] for r in runs), sum(r["padded_tokens"] for r in runs)
    core: Counter[str] = Counter()
    for r in runs:
        core.update(r["core_seconds"])
    total = sum(core.values())
    folder = resolve_model_path(EncodeConfig().model)
    peak = cpu_peak()
    per_core = peak["int8_peak_gops"] * 1e9 / peak["cores"]
    mean_len = tokens / (len(texts) * repeats)
    gemm_time = core.get("int8 matrix products", 0.0)
    gemm_rate = gemm_flops_per_token(folder) * padded / gemm_time if gemm_time else 0.0
    return {
        "cpu": cpu_label(), "peak": peak, "texts": len(texts) * repeats,
        "mean_tokens": round(mean_len, 1), "padding_share": round(1 - tokens / padded, 3),
        "tokens_per_s": round(tokens / seconds),
        "fraction_of_int8_peak": round(tokens / seconds * flops_per_token(folder, mean_len)
                                       / (peak["int8_peak_gops"] * 1e9), 3),
        "fraction_of_int8_peak_padded": round(
            padded / seconds * flops_per_token(folder, mean_len)
            / (peak["int8_peak_gops"] * 1e9), 3),
        "core_seconds_share": {k: round(v / total, 3) for k, v in core.most_common()},
        "int8_products_fraction_of_core_peak": round(gemm_rate / per_core, 3),
        "cores_busy": round(total / seconds / peak["cores"], 3)}


def markdown(r: dict[str, Any]) -> str:
    lines = [f"encode (OpenVINO int8, as encode batches) inside OpenVINO; {r['cpu']}; "
             f"{r['texts']} texts, mean {r['mean_tokens']} tokens, padding "
             f"{r['padding_share']:.1%} of the tokens run",
             "", "| kernel kind | share of core-seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1%} |" for k, v in r["core_seconds_share"].items()]
    lines += ["", f"tokens/s {r['tokens_per_s']}: {r['fraction_of_int8_peak']:.1%} of the "
              f"int8 peak on real tokens, {r['fraction_of_int8_peak_padded']:.1%} on the "
              f"tokens run (padding included); the int8 matrix products reach "
              f"{r['int8_products_fraction_of_core_peak']:.1%} of a core's int8 peak while "
              f"they run; cores busy in OpenVINO's nodes {r['cores_busy']:.1%} of the wall time"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    args = parser.parse_args()
    report = run(args.repeats)
    save(args.out, "encode_profile", report, markdown(report))


if __name__ == "__main__":
    main()
