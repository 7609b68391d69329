"""The CPU backends run from an export (OpenVINO, ONNX Runtime) against the PyTorch model:
the same vectors within int8's error, in input order, and the same vector for a text
whatever its batch (exactly for ONNX's per-text int8; for OpenVINO's static int8 within
rounding, and exactly for the same batch)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest

from tasks.core.config import EncodeConfig
from tasks.encoders.device import runtime_for
from tasks.encoders.loading import encoder_for
from tasks.encoders.local_runtime import verify
from tasks.encoders.model import load_tokenizer, model_fingerprint, read_pipeline
from tasks.encoders.onnx import OnnxEncoder

TORCH = EncodeConfig(device="cpu", backend="torch", precision="fp32")
INT8 = EncodeConfig(device="cpu", backend="onnx", precision="int8")
OV_INT8 = EncodeConfig(device="cpu", backend="openvino", precision="int8")


@pytest.fixture(scope="module")
def sample_chunks(sample_run):
    return pq.read_table(sample_run / "data/03_chunk/chunks.parquet").column("text").to_pylist()


@pytest.mark.parametrize("cfg", [INT8, OV_INT8], ids=["onnx", "openvino"])
def test_int8_matches_pytorch_on_every_sample_chunk(sample_chunks, cfg):
    a = encoder_for(cfg).encode(sample_chunks, batch_size=32, normalize_embeddings=True)
    b = encoder_for(TORCH).encode(sample_chunks, batch_size=32, normalize_embeddings=True)
    cos = (a * b).sum(axis=1)
    assert len(cos) > 400 and cos.min() >= 0.98, (cos.min(), cos.mean())


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_fp32_export_is_the_pytorch_model(sample_chunks, backend):
    texts = sample_chunks[:64]
    fp32 = EncodeConfig(device="cpu", backend=backend, precision="fp32")
    a = encoder_for(fp32).encode(texts, batch_size=16, normalize_embeddings=True)
    b = encoder_for(TORCH).encode(texts, batch_size=16, normalize_embeddings=True)
    assert (a * b).sum(axis=1).min() > 0.9999


def test_input_order_and_a_text_gets_one_vector_whatever_its_batch(sample_chunks):
    enc = encoder_for(INT8)
    texts = [sample_chunks[i] for i in (5, 0, 17, 3)] + ["Ok.", sample_chunks[5]]
    x = enc.encode(texts, batch_size=4, normalize_embeddings=True)
    alone = np.vstack([enc.encode([t], normalize_embeddings=True) for t in texts])
    np.testing.assert_array_equal(x, alone)
    np.testing.assert_array_equal(x[0], x[5])


def test_openvino_keeps_input_order_and_a_batch_only_rounds(sample_chunks):
    enc = encoder_for(OV_INT8)
    texts = list(dict.fromkeys(sample_chunks))[:80] + ["Ok.", "How do neutron stars form?"]
    order = np.random.default_rng(0).permutation(len(texts))
    x = enc.encode(texts, batch_size=16, normalize_embeddings=True)
    shuffled = enc.encode([texts[i] for i in order], batch_size=16, normalize_embeddings=True)
    np.testing.assert_array_equal(enc.encode(texts, batch_size=16, normalize_embeddings=True), x)
    alone = np.vstack([enc.encode([t], normalize_embeddings=True) for t in texts])
    cos = (x * alone).sum(axis=1)
    assert cos.min() > 0.999, cos.min()  # static ranges: batch-mates change only rounding
    assert (shuffled * x[order]).sum(axis=1).min() > 0.999
    assert (shuffled * x).sum(axis=1).mean() < 0.9  # out of order, the rows would differ


def test_backend_and_precision_are_part_of_the_space():
    assert runtime_for(EncodeConfig(device="cpu")) == ("cpu", "openvino", "int8")
    configs = [TORCH, INT8, OV_INT8] + [EncodeConfig(device="cpu", backend=b, precision="fp32")
                                        for b in ("onnx", "openvino")]
    assert len({model_fingerprint(c)["fingerprint"] for c in configs}) == 5
    assert model_fingerprint(EncodeConfig(device="cpu"))["fingerprint"] == \
        model_fingerprint(OV_INT8)["fingerprint"]


def test_the_calibration_set_is_part_of_the_int8_export_and_the_space(monkeypatch):
    from tasks.encoders import local_runtime, openvino

    key, space = openvino.export_key("files", "int8"), model_fingerprint(OV_INT8)["fingerprint"]
    fp32_key = openvino.export_key("files", "fp32")
    monkeypatch.setattr(local_runtime, "calibration_digest", lambda: "another set")
    monkeypatch.setattr(openvino, "calibration_digest", lambda: "another set")
    assert openvino.export_key("files", "int8") != key
    assert openvino.export_key("files", "fp32") == fp32_key
    assert model_fingerprint(OV_INT8)["fingerprint"] != space


@pytest.mark.parametrize(("update", "match"), [
    ({"backend": "torch", "precision": "int8"}, "int8 needs backend openvino or onnx"),
    ({"backend": "onnx", "precision": "bf16"}, "bf16 needs backend torch"),
    ({"backend": "openvino", "precision": "fp16"}, "fp16 needs backend torch on cuda"),
])
def test_impossible_combinations_refused(update, match):
    with pytest.raises(ValueError, match=match):
        EncodeConfig(**update)


def test_fp16_on_cpu_refused():
    with pytest.raises(ValueError, match=r"encode\.precision: 'fp16'.*needs device cuda"):
        runtime_for(EncodeConfig(device="cpu", backend="torch", precision="fp16"))


def test_model_with_dense_head_is_refused_for_onnx(tmp_path):
    (tmp_path / "modules.json").write_text(json.dumps([
        {"path": "", "type": "sentence_transformers.models.Transformer"},
        {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"path": "2_Dense", "type": "sentence_transformers.models.Dense"}]))
    with pytest.raises(ValueError, match=r"Dense.*use encode.backend: torch"):
        read_pipeline(tmp_path)


def test_an_export_that_strays_is_refused():
    good = encoder_for(INT8)
    wrong = OnnxEncoder(good.model_path, load_tokenizer(INT8.model),
                        replace(good.pipeline, pooling="max"), good.max_seq_length, per_text=True)
    assert verify(good, encoder_for(TORCH), "onnx")["min_cosine"] >= 0.95
    with pytest.raises(ValueError, match="the onnx export strays from the PyTorch model"):
        verify(wrong, encoder_for(TORCH), "onnx")


def test_openvino_requests_stay_within_their_token_budget(sample_chunks):
    from tasks.encoders.openvino import TOKENS_PER_REQUEST

    enc = encoder_for(OV_INT8)
    texts = list(dict.fromkeys(sample_chunks))[:200]
    ids = enc.tokenizer(texts, truncation="longest_first", max_length=enc.max_seq_length,
                        return_attention_mask=False)["input_ids"]
    order = np.argsort([-len(t) for t in ids], kind="stable")
    batches = list(enc._batches(ids, order, 32))
    assert np.array_equal(np.concatenate([rows for rows, _ in batches]), order)
    widths = [enc._width(len(ids[rows[0]])) for rows, _ in batches]
    assert all(cap * w <= TOKENS_PER_REQUEST and len(rows) <= cap <= 32
               for (rows, cap), w in zip(batches, widths, strict=True))
    assert max(widths) > TOKENS_PER_REQUEST // 32  # the budget did cut some batches


def test_processes_that_encode_and_exit_at_once_exit_cleanly():
    """OpenVINO's models are destroyed at exit on the main thread (`openvino._close_all`):
    left to the end of the process, one in 20 such processes aborted on a loaded machine
    (rc 134, "terminate called without an active exception"). Eight at once on two cores."""
    import subprocess
    import sys

    encoder_for(OV_INT8)  # the export exists before the processes start
    script = ("from tasks.core.config import EncodeConfig\n"
              "from tasks.encoders.loading import encoder_for\n"
              "cfg = EncodeConfig(device='cpu', backend='openvino', precision='int8')\n"
              "print(encoder_for(cfg).encode(['a neutron star', 'a white dwarf']).shape)\n")
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(8)]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    assert all(rc == 0 and "(2, 384)" in out for rc, out, _ in results), \
        [(rc, err[-300:]) for rc, _, err in results if rc]


def test_models_dropped_soon_after_they_ran_do_not_abort_the_process():
    """Eight load -> encode -> drop rounds in one process (what a build's stages do, with
    `release_local_encoders`): with Python callbacks on OpenVINO's threads, a garbage
    collection there joined the thread it ran on and aborted every such process ("Resource
    deadlock avoided")."""
    import subprocess
    import sys

    encoder_for(OV_INT8)  # the export exists before the process starts
    script = ("import gc\n"
              "from tasks.core.config import EncodeConfig\n"
              "from tasks.encoders.loading import encoder_for, release_local_encoders\n"
              "cfg = EncodeConfig(device='cpu', backend='openvino', precision='int8')\n"
              "texts = [f'star {i} collapses ' * (1 + i % 5) for i in range(300)]\n"
              "for _ in range(8):\n"
              "    encoder_for(cfg).encode(texts, batch_size=32)\n"
              "    release_local_encoders()\n"
              "    gc.collect()\n"
              "print('done')\n")
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0 and "done" in done.stdout, done.stderr[-500:]


def test_threads_sharing_one_openvino_model_encode_at_once(sample_chunks):
    """Dask's threads share the loaded model: each call has inference requests of its own
    (shared ones failed with "Infer Request is busy"), and each thread gets the vectors a
    call alone gives."""
    from concurrent.futures import ThreadPoolExecutor

    model = encoder_for(OV_INT8)
    parts = [sample_chunks[i::4] for i in range(4)]
    alone = [model.encode(p, batch_size=16) for p in parts]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda p: model.encode(p, batch_size=16), parts * 3))
    assert all(np.array_equal(a, b) for a, b in zip(alone * 3, together, strict=True))
