"""The ONNX Runtime backend: the sentence-transformers model exported here, optionally int8.

The model's transformer is exported from its local weights with `torch.onnx`, fused with
onnxruntime's transformer optimizer and, for int8, dynamically quantized per channel. Pooling
and normalisation follow the model's own sentence-transformers modules. Each export is
checked against the PyTorch model and cached (`tasks.encoders.local_runtime`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from tasks.encoders import local_runtime
from tasks.encoders.local_runtime import PROBES, cached_export, cpu_threads, pool
from tasks.encoders.model import EXPORT_VERSION, Pipeline, read_model_config, read_pipeline

log = logging.getLogger(__name__)


def export_key(files_sha256: str, precision: str) -> str:
    """Identity of an export: weights, precision, exporter and runtime versions."""
    return local_runtime.export_key(files_sha256, precision, EXPORT_VERSION,
                                    ("torch", "onnxruntime", "transformers"),
                                    weights="int8, 7 bits")


def export_fp32_onnx(folder: Path, tokenizer: Any, path: Path) -> None:
    import torch  # noqa: PLC0415
    from transformers import AutoModel  # noqa: PLC0415

    model = AutoModel.from_pretrained(str(folder), attn_implementation="eager").eval()
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids")
             if n in tokenizer.model_input_names]

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(names, inputs, strict=True))).last_hidden_state

    sample = tokenizer(PROBES[:2], padding=True, return_tensors="pt")
    axes = {n: {0: "batch", 1: "seq"} for n in [*names, "last_hidden_state"]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(Hidden(), tuple(sample[n] for n in names), str(path),
                          input_names=names, output_names=["last_hidden_state"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)


def _optimize(path: Path, folder: Path, out: Path) -> bool:
    """Fuse attention / layer norm / GELU; False (and the plain export kept) when it fails."""
    from onnxruntime.transformers import optimizer  # noqa: PLC0415

    cfg = read_model_config(folder)
    try:
        opt = optimizer.optimize_model(str(path), model_type="bert", num_heads=cfg.num_heads,
                                       hidden_size=cfg.hidden_size, opt_level=1)
        opt.save_model_to_file(str(out))
    except Exception as err:  # optimizer errors have no common base; the plain graph works
        log.warning("onnx: transformer fusion failed (%s); using the unfused graph", err)
        return False
    return True


def _quantize(src: Path, dst: Path) -> None:
    import onnx  # noqa: PLC0415
    from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: PLC0415

    quiet = logging.getLogger()  # the quantizer logs a generic "consider pre-processing" hint
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        # 7-bit weights: u8 x s8 products summed in pairs saturate int16 on CPUs without
        # VNNI (AVX2 only: min cosine 0.974 to PyTorch on the sample's chunks at 8 bits)
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         reduce_range=True, op_types_to_quantize=["MatMul", "Attention"],
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        quiet.setLevel(level)


def export(folder: Path, tokenizer: Any, precision: str, target: Path) -> None:
    """Write `target/model.onnx` (+ `export.json`) for `folder` at `precision` (fp32|int8)."""
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as tmp:
        work = Path(tmp)
        export_fp32_onnx(folder, tokenizer, work / "raw.onnx")
        graph = work / "fused.onnx"
        fused = _optimize(work / "raw.onnx", folder, graph)
        if not fused:
            graph = work / "raw.onnx"
        final = work / "out"
        final.mkdir()
        if precision == "int8":
            _quantize(graph, final / "model.onnx")
        else:
            shutil.copyfile(graph, final / "model.onnx")
        (final / "export.json").write_text(json.dumps(
            {"source": str(folder), "precision": precision, "fused": fused}, indent=2))
        os.replace(final, target)


class OnnxEncoder:
    """The subset of SentenceTransformer that embedpipe calls, run by onnxruntime on the CPU.

    An int8 graph runs one text per call: dynamic quantization scales activations over the
    whole call, so in a batch a text's vector would depend on its batch-mates (cosine 0.989
    to its own vector alone on the sample). Alone, a text always gets the same vector and no
    padding is computed. Single texts are small work for a thread pool inside each operator,
    so per-text calls run one ORT thread each, one call per core at a time (2 cores, ~10k
    chunks, `python -m benchmarks.run --size small`: encode 108.8 s vs 141.8 s with one call
    using both cores).
    """

    device = "cpu"

    def __init__(self, model_path: Path, tokenizer: Any, pipeline: Pipeline,
                 max_seq_length: int, per_text: bool) -> None:
        import onnxruntime as ort  # noqa: PLC0415

        self.cores = cpu_threads()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = 1 if per_text else self.cores
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model_path), options,
                                            providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.tokenizer, self.pipeline, self.max_seq_length = tokenizer, pipeline, max_seq_length
        self.model_path, self.per_text = model_path, per_text

    def get_embedding_dimension(self) -> int:
        return self.pipeline.dim

    def _run(self, feeds: Mapping[str, Any]) -> np.ndarray:
        hidden = self.session.run(None, {n: feeds[n].astype("int64") for n in self.inputs})[0]
        return pool(hidden, feeds["attention_mask"], self.pipeline.pooling)

    def _batch(self, texts: list[str]) -> np.ndarray:
        enc = self.tokenizer(texts, padding=True, truncation="longest_first",
                             max_length=self.max_seq_length, return_tensors="np")
        return self._run(enc)

    def _one_by_one(self, texts: list[str]) -> np.ndarray:
        """Each text in its own call, one call per core at a time (ORT frees the GIL)."""
        enc = self.tokenizer(texts, truncation="longest_first", max_length=self.max_seq_length)

        def one(i: int) -> np.ndarray:
            return self._run({n: np.asarray([enc[n][i]]) for n in enc})[0]

        with ThreadPoolExecutor(self.cores) as threads:
            return np.stack(list(threads.map(one, range(len(texts)))))

    def encode(self, sentences: list[str], batch_size: int = 32,
               normalize_embeddings: bool = False, convert_to_numpy: bool = True,
               show_progress_bar: bool = False) -> np.ndarray:
        """(n, d) float32 vectors in input order: one text per call (int8), or batches of
        similar length, like ST."""
        del convert_to_numpy, show_progress_bar  # always numpy; progress is the caller's
        if self.pipeline.lower_case:
            sentences = [t.lower() for t in sentences]
        if self.per_text and sentences:
            out = self._one_by_one(sentences).astype("float32", copy=False)
        else:
            out = np.zeros((len(sentences), self.pipeline.dim), dtype="float32")
            order = np.argsort([-len(s) for s in sentences], kind="stable")
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                out[rows] = self._batch([sentences[i] for i in rows])
        if self.pipeline.normalize or normalize_embeddings:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out


def load_onnx_encoder(folder: Path, files_sha256: str, precision: str, max_seq_length: int,
                      tokenizer: Any, reference: Callable[[], Any]) -> OnnxEncoder:
    """The cached export for `folder` at `precision`; exported and checked against
    `reference()` (the PyTorch model) when missing."""
    pipeline = read_pipeline(folder)
    return cached_export(
        "onnx", export_key(files_sha256, precision), "model.onnx",
        lambda target: export(folder, tokenizer, precision, target),
        lambda target: OnnxEncoder(target / "model.onnx", tokenizer, pipeline, max_seq_length,
                                   per_text=precision == "int8"),
        reference)
