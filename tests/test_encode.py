from __future__ import annotations

import numpy as np

from tasks.core.config import EncodeConfig
from tasks.core.vectors import arrow_to_vectors
from tasks.encode import encode_texts, vectors_table
from tasks.encoders.device import pick_device
from tasks.encoders.model import model_fingerprint

CFG = EncodeConfig(device="cpu")


def test_vectors_in_input_order_duplicates_identical(encoder):
    texts = ["The cat sat on the mat.", "Stock markets fell sharply.", "The cat sat on the mat."]
    x = encode_texts(encoder, texts, CFG, "")
    assert x.shape == (3, 384) and x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(x[0], x[2])
    single = encode_texts(encoder, [texts[1]], CFG, "")
    np.testing.assert_allclose(x[1], single[0], atol=1e-5)


def test_semantics_survive(encoder):
    x = encode_texts(encoder, ["A dog barked loudly.", "The puppy was yapping.",
                               "Quarterly tax filing deadline."], CFG, "")
    assert x[0] @ x[1] > x[0] @ x[2] + 0.2


def test_prefix_changes_vectors_and_fingerprint(encoder):
    a = encode_texts(encoder, ["rain"], CFG, "")
    b = encode_texts(encoder, ["rain"], CFG, "query: ")
    assert float(a[0] @ b[0]) < 0.999
    fp_plain = model_fingerprint(CFG)["fingerprint"]
    assert fp_plain != model_fingerprint(CFG.model_copy(update={"query_prefix": "q: "}))[
        "fingerprint"]
    assert fp_plain == model_fingerprint(EncodeConfig(device="cpu"))["fingerprint"]


def test_vectors_table_is_fixed_size_list():
    x = np.arange(6, dtype="float32").reshape(3, 2)
    table = vectors_table(["a", "b", "c"], x)
    assert str(table.schema.field("vector").type) == "fixed_size_list<item: float>[2]"
    np.testing.assert_array_equal(arrow_to_vectors(table.column("vector")), x)


def test_unavailable_device_is_refused():
    import pytest

    with pytest.raises(ValueError, match=r"encode\.device: 'cuda' is not available"):
        pick_device("cuda")


def test_a_models_declared_prompts_apply_by_default_and_params_override_them(tmp_path):
    import json

    from tasks.core.config import DEFAULT_MODEL
    from tasks.encode import local_encoder
    from tasks.encoders.model import prefixes, resolve_model_path

    # the packaged model, with prompts declared as sentence-transformers models declare them
    # (and a default prompt name, which must not be applied a second time)
    folder = tmp_path / "prompted"
    folder.mkdir()
    for f in resolve_model_path(DEFAULT_MODEL).iterdir():
        if f.name != "config_sentence_transformers.json":
            (folder / f.name).symlink_to(f)
    (folder / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": {"query": "query: ", "document": "passage: "},
         "default_prompt_name": "query"}))
    cfg = EncodeConfig(model=str(folder), device="cpu", backend="torch", precision="fp32")
    assert prefixes(cfg) == ("passage: ", "query: ")
    assert model_fingerprint(cfg)["passage_prefix"] == "passage: "
    assert prefixes(cfg.model_copy(update={"passage_prefix": ""})) == ("", "query: ")
    assert prefixes(EncodeConfig(device="cpu")) == ("", "")  # a model declaring none

    plain = EncodeConfig(device="cpu", backend="torch", precision="fp32")  # the model as shipped
    got = local_encoder(cfg)(["Neutron stars are dense."], None)
    want = local_encoder(plain)(["passage: Neutron stars are dense."], None)
    assert float((got * want).sum()) > 0.9999


def test_queries_reach_the_space_of_any_backend_the_index_was_built_with():
    from tasks.query.search import query_encode_config

    for built in (EncodeConfig(device="cpu", backend="torch", precision="fp32"),
                  EncodeConfig(device="cpu"),  # auto: openvino int8 on this CPU
                  EncodeConfig(device="cpu", backend="onnx", precision="fp32",
                               query_prefix="query: ")):
        stamped = model_fingerprint(built)
        assert model_fingerprint(query_encode_config(stamped))["fingerprint"] == (
            stamped["fingerprint"]), built


def test_a_rerun_served_from_the_vector_cache_loads_no_encoder(sample_run, tmp_path,
                                                               monkeypatch):
    import shutil

    import tasks.encode as stage
    from flows.pipeline import STAGE_TASKS
    from tests.workspace import copy_workspace

    ws = copy_workspace(sample_run, tmp_path / "ws", through="encode")
    want = (ws / "data/04_encode/vectors.parquet").read_bytes()
    shutil.rmtree(ws / "data/04_encode")  # the output gone, the vector cache kept

    def no_model(cfg):
        raise AssertionError("the encoder was loaded with every vector in the cache")

    monkeypatch.setattr(stage, "encoder_for", no_model)
    STAGE_TASKS["encode"].fn(root=str(ws))
    assert (ws / "data/04_encode/vectors.parquet").read_bytes() == want


def test_released_encoders_load_again_and_give_the_same_vectors():
    """After encode (and once index and evaluate have embedded their queries) the stages
    let go of the loaded models (`release_local_encoders`): the next call loads the model
    again, and it gives the same bytes."""
    from tasks.encoders.loading import encoder_for, release_local_encoders  # noqa: PLC0415

    cfg = EncodeConfig(device="cpu")
    model = encoder_for(cfg)
    texts = ["How do volcanoes form?", "ripe tomatoes in August"]
    before = model.encode(texts).tobytes()
    release_local_encoders()
    again = encoder_for(cfg)
    assert again is not model
    assert again.encode(texts).tobytes() == before
