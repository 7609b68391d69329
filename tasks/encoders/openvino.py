"""The OpenVINO backend: the model converted here and, for int8, statically quantised.

The transformer is exported to ONNX (the ONNX backend's plain export), converted with
`openvino.convert_model` and, for int8, quantised by NNCF with activation ranges calibrated
once on a fixed text set (`local_runtime.calibration_texts`). Static ranges make a text's
vector independent of its batch-mates up to rounding, so texts are batched, length-sorted by
token count, and run as several inference requests at once, each on its own cores
(OpenVINO's throughput mode). Inference precision is held at f32 for the ops left in
floating point (OpenVINO would pick bf16 on CPUs with AMX).
Exports are checked against PyTorch and cached like the ONNX ones.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import logging
import os
import tempfile
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tasks.encoders import local_runtime
from tasks.encoders.local_runtime import (
    cached_export,
    calibration_digest,
    calibration_texts,
    cpu_threads,
    pool,
)
from tasks.encoders.model import OPENVINO_EXPORT_VERSION, Pipeline, read_pipeline
from tasks.encoders.onnx import export_fp32_onnx

log = logging.getLogger(__name__)
CALIBRATION_BATCH = 4  # texts per calibration sample
# OpenVINO keeps state of about the int8 weights' size (25 MB for all-MiniLM-L6-v2) for every
# input shape it meets, so a long run of exact widths grew without bound (1.9 GB after 8k
# texts of random lengths). Widths are rounded up to one of WIDTHS steps of the sequence
# length, and a short batch to a power of two: a bounded set of shapes for a few % padding.
WIDTHS = 16
# Tokens (rows x padded width) of one inference request at most: a request holds its
# activations at that size, the attention scores alone rows x 12 x width^2 floats (100 MB per
# request for 32 x 256 with all-MiniLM-L6-v2). Long texts go 8 to a request, short ones up to
# `batch_size`; measured on 2,048 chunks: 140 MB less RSS and no slower (benchmarks/memory.py).
TOKENS_PER_REQUEST = 2048


def export_key(files_sha256: str, precision: str) -> str:
    """Identity of an export: weights, precision, recipe, calibration and library versions."""
    int8 = precision == "int8"
    return local_runtime.export_key(
        files_sha256, precision, OPENVINO_EXPORT_VERSION,
        ("torch", "transformers", "openvino") + (("nncf",) if int8 else ()),
        calibration=calibration_digest() if int8 else None)


def _feeds(tokenizer: Any, texts: list[str], names: list[str], max_len: int
           ) -> dict[str, np.ndarray]:
    enc = tokenizer(texts, padding=True, truncation="longest_first", max_length=max_len,
                    return_tensors="np")
    return {n: enc[n].astype("int64") for n in names}


def _quantize(model: Any, tokenizer: Any, max_len: int, texts: list[str]) -> Any:
    import nncf  # noqa: PLC0415

    names = [p.get_any_name() for p in model.inputs]
    samples = [texts[i:i + CALIBRATION_BATCH] for i in range(0, len(texts), CALIBRATION_BATCH)]
    data = nncf.Dataset(samples, lambda batch: _feeds(tokenizer, batch, names, max_len))
    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(logging.WARNING)  # INFO lines per statistic
    try:  # NNCF draws its progress bars on stdout, with no switch to turn them off
        with contextlib.redirect_stdout(io.StringIO()):
            return nncf.quantize(model, data, model_type=nncf.ModelType.TRANSFORMER,
                                 subset_size=len(samples))
    finally:
        nncf_log.setLevel(level)


def export(folder: Path, tokenizer: Any, precision: str, max_len: int, target: Path) -> None:
    """Write `target/model.xml` (+ `.bin`, `export.json`) for `folder` at fp32 or int8."""
    import openvino as ov  # noqa: PLC0415

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as tmp:
        work = Path(tmp)
        export_fp32_onnx(folder, tokenizer, work / "raw.onnx")
        model = ov.convert_model(str(work / "raw.onnx"))
        texts = calibration_texts() if precision == "int8" else []
        if texts:
            model = _quantize(model, tokenizer, max_len, texts)
        final = work / "out"
        final.mkdir()
        ov.save_model(model, str(final / "model.xml"), compress_to_fp16=False)
        (final / "export.json").write_text(json.dumps(
            {"source": str(folder), "precision": precision, "calibration_texts": len(texts)},
            indent=2))
        os.replace(final, target)


# Every OpenVINO encoder alive in this process, for `_close_all`.
_LIVE: weakref.WeakSet[OpenVinoEncoder] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Destroy every OpenVINO model while the interpreter is whole, on the main thread.
    Left to the end of the process, a compiled model outlived the plugin's own static
    state, and a joinable worker thread destroyed there aborted the process after its work
    was done ("terminate called without an active exception", rc 134: one `embedpipe
    search` in 20 on a loaded machine)."""
    for encoder in list(_LIVE):
        encoder.close()


class OpenVinoEncoder:
    """The subset of SentenceTransformer that embedpipe calls, run by OpenVINO on the CPU."""

    device = "cpu"

    def __init__(self, model_path: Path, tokenizer: Any, pipeline: Pipeline,
                 max_seq_length: int) -> None:
        import openvino as ov  # noqa: PLC0415

        core = ov.Core()
        # OpenVINO's own cache of the compiled model beside the export: compiling from it
        # takes a third of the time (1.7 -> 0.55 s for MiniLM on 2 cores), the same numbers
        # (it keys entries by graph, device and settings; `cached_export` holds the export's
        # lock while this runs, so one process writes an entry at a time)
        core.set_property({"CACHE_DIR": str(model_path.parent / "compiled")})
        self.compiled = core.compile_model(str(model_path), "CPU", {
            "PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "f32",
            "INFERENCE_NUM_THREADS": cpu_threads()})
        _LIVE.add(self)
        self.requests = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.inputs = [p.get_any_name() for p in self.compiled.inputs]
        self.tokenizer, self.pipeline, self.max_seq_length = tokenizer, pipeline, max_seq_length
        self.pad_id = tokenizer.pad_token_id or 0
        self.step = max(8, -(-max_seq_length // WIDTHS // 8) * 8)

    def close(self) -> None:
        """Free the model now (idempotent; `encode` fails after it)."""
        self.compiled = None

    def _collect(self, request: Any, job: tuple[np.ndarray, np.ndarray] | None,
                 out: np.ndarray) -> None:
        """Wait for `request` and pool its batch `job` (rows, mask) into `out`."""
        if job is None:
            return
        rows, mask = job
        request.wait()
        hidden = request.get_output_tensor(0).data[:len(rows)]
        out[rows] = pool(hidden, mask[:len(rows)], self.pipeline.pooling)

    def get_embedding_dimension(self) -> int:
        return self.pipeline.dim

    def _width(self, n_tokens: int) -> int:
        return min(-(-n_tokens // self.step) * self.step, self.max_seq_length)

    def _batches(self, ids: list[list[int]], order: np.ndarray, batch_size: int
                 ) -> Iterator[tuple[np.ndarray, int]]:
        """(rows of one batch, rows of its shape) over the length-sorted `order`: at most
        `batch_size` texts, and at most `TOKENS_PER_REQUEST` tokens once padded."""
        start = 0
        while start < len(order):
            cap = max(1, min(batch_size, TOKENS_PER_REQUEST // self._width(len(ids[order[start]]))))
            yield order[start:start + cap], cap
            start += cap

    def _padded(self, ids: list[list[int]], types: list[list[int]] | None, cap: int
                ) -> dict[str, np.ndarray]:
        """One batch's inputs, its shape rounded (`WIDTHS`; a short last batch to a power of
        two): rows past `len(ids)` repeat the last text and are not read."""
        width = self._width(max(len(t) for t in ids))
        rows = cap if len(ids) == cap else min(cap, 1 << (len(ids) - 1).bit_length())
        ids = ids + [ids[-1]] * (rows - len(ids))
        types = None if types is None else types + [types[-1]] * (rows - len(types))
        feeds = {"input_ids": np.full((rows, width), self.pad_id, dtype="int64"),
                 "attention_mask": np.zeros((rows, width), dtype="int64"),
                 "token_type_ids": np.zeros((rows, width), dtype="int64")}
        for row, tokens in enumerate(ids):
            feeds["input_ids"][row, :len(tokens)] = tokens
            feeds["attention_mask"][row, :len(tokens)] = 1
            if types is not None:
                feeds["token_type_ids"][row, :len(tokens)] = types[row]
        return {n: feeds[n] for n in self.inputs}

    def encode(self, sentences: list[str], batch_size: int = 32,
               normalize_embeddings: bool = False, convert_to_numpy: bool = True,
               show_progress_bar: bool = False) -> np.ndarray:
        """(n, d) float32 vectors in input order. Texts are tokenized once, batched by token
        count (little padding, shapes rounded: `_padded`; long texts fewer to a batch:
        `TOKENS_PER_REQUEST`) and run `self.requests` batches at a time."""
        del convert_to_numpy, show_progress_bar  # always numpy; progress is the caller's
        if self.pipeline.lower_case:
            sentences = [t.lower() for t in sentences]
        out = np.zeros((len(sentences), self.pipeline.dim), dtype="float32")
        if not sentences:
            return out
        enc = self.tokenizer(sentences, truncation="longest_first",
                             max_length=self.max_seq_length, return_attention_mask=False)
        ids, types = enc["input_ids"], enc.get("token_type_ids")
        order = np.argsort([-len(t) for t in ids], kind="stable")
        # Requests of this call (threads that share the model each have their own), taken
        # in turn and read back on this thread: no Python runs on OpenVINO's threads (a
        # garbage collection there that freed an OpenVINO object joined the thread it ran
        # on: "Resource deadlock avoided")
        infer = [self.compiled.create_infer_request() for _ in range(self.requests)]
        pending: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(infer)
        for k, (rows, cap) in enumerate(self._batches(ids, order, batch_size)):
            slot = k % len(infer)
            self._collect(infer[slot], pending[slot], out)
            feeds = self._padded([ids[i] for i in rows],
                                 None if types is None else [types[i] for i in rows], cap)
            infer[slot].start_async(feeds)
            pending[slot] = (rows, feeds["attention_mask"])
        for request, job in zip(infer, pending, strict=True):
            self._collect(request, job, out)
        if self.pipeline.normalize or normalize_embeddings:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out


def load_openvino_encoder(folder: Path, files_sha256: str, precision: str,
                          max_seq_length: int, tokenizer: Any,
                          reference: Callable[[], Any]) -> OpenVinoEncoder:
    """The cached export for `folder` at `precision`; converted, quantised and checked
    against `reference()` (the PyTorch model) when missing."""
    pipeline = read_pipeline(folder)
    return cached_export(
        "openvino", export_key(files_sha256, precision), "model.xml",
        lambda target: export(folder, tokenizer, precision, max_seq_length, target),
        lambda target: OpenVinoEncoder(target / "model.xml", tokenizer, pipeline,
                                       max_seq_length),
        reference)
