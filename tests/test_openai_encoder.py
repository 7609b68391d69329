"""encode.backend openai against a real OpenAI-compatible server: infinity-emb serving the
packaged model (`embeddings_server`), with the fault proxy between client and server."""

from __future__ import annotations

import json
import logging
import random
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import numpy as np
import pytest

from tasks.core.config import EncodeConfig, parse_params
from tasks.encoders.openai_api import (
    EmbeddingApiError,
    EmbeddingsClient,
    OpenAIEncoder,
    api_settings,
    parse_embeddings,
    retry_delay,
    token_batches,
)
from tests.faulty_proxy import API_RATE_LIMIT, FaultyProxy, api_error
from tests.workspace import (
    API_KEY,
    API_KEY_ENV,
    SERVED_MODEL,
    copy_workspace,
    free_port,
    run_stages,
)

TEXTS = [
    "Neutron stars are the collapsed cores of massive stars.",
    "Feed a sourdough starter with equal weights of flour and water.",
    "Corals expel their algae when the ocean warms, and bleach.",
    "def add(a, b): return a + b",
    "Ok.",
    "Der Hund schläft im Garten, während die Katze spielt.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen. " * 12,
    "Quarterly revenue rose 12% while operating costs fell.",
] * 4 + [f"Record {i}: a short note about tide pool number {i}." for i in range(40)]


def api_config(base_url: str, **kw) -> EncodeConfig:
    return EncodeConfig(backend="openai", api_base_url=base_url, api_model=SERVED_MODEL,
                        api_key_env=API_KEY_ENV, **kw)


def proxied(proxy: FaultyProxy) -> str:
    return f"{proxy.url}/v1"


def encoder_through(base_url: str, waits: list[float] | None = None, **kw) -> OpenAIEncoder:
    """An encoder whose sleeps are recorded (and slept), sized as `encoder_for` sizes it."""
    from tasks.encoders.model import token_counter

    cfg = api_config(base_url, **kw)

    def sleep(s: float) -> None:
        (waits if waits is not None else []).append(s)
        time.sleep(s)

    return OpenAIEncoder(EmbeddingsClient(api_settings(cfg), sleep), 384,
                         token_counter(cfg.model, None, 256), cfg.api_batch_tokens,
                         cfg.api_concurrency)


@pytest.fixture(scope="module")
def local_vectors():
    from tasks.encoders.loading import encoder_for

    model = encoder_for(EncodeConfig(device="cpu", backend="torch", precision="fp32"))
    return model.encode(TEXTS, batch_size=16, normalize_embeddings=True, convert_to_numpy=True)


def test_vectors_match_the_local_model(embeddings_server, local_vectors):
    from tasks.encoders.loading import encoder_for

    x = encoder_for(api_config(embeddings_server)).encode(TEXTS, batch_size=16,
                                                            normalize_embeddings=True)
    assert x.shape == (len(TEXTS), 384) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    cos = (x * local_vectors).sum(axis=1)
    assert cos.min() >= 0.99, cos.min()


def test_fingerprint_names_the_server_not_the_key(embeddings_server):
    from tasks.encoders.device import runtime_for
    from tasks.encoders.model import model_fingerprint

    cfg = api_config(embeddings_server)
    info = model_fingerprint(cfg)
    port = embeddings_server.split(":")[2].split("/")[0]
    assert info["backend"] == "openai" and info["precision"] == "api" and info["dim"] == 384
    assert info["numerics"] == {"api_host": f"http://127.0.0.1:{port}", "api_path": "/v1",
                                "served_model": SERVED_MODEL}
    assert runtime_for(cfg) == ("api", "openai", "api")
    other_host = model_fingerprint(api_config(embeddings_server.replace("127.0.0.1",
                                                                         "localhost")))
    assert other_host["fingerprint"] != info["fingerprint"]  # another server: another space
    local = model_fingerprint(EncodeConfig(device="cpu", backend="torch", precision="fp32"))
    assert local["fingerprint"] != info["fingerprint"]
    assert API_KEY not in json.dumps(info)


def test_throttling_and_dropped_connections_are_retried(embeddings_server, local_vectors):
    from tasks.encoders.model import token_counter

    waits: list[float] = []
    with FaultyProxy(embeddings_server, fault_rate=0.4, seed=5,
                     throttle=API_RATE_LIMIT) as proxy:
        enc = encoder_through(proxied(proxy), waits, api_batch_tokens=100, api_concurrency=3)
        x = enc.encode(TEXTS, batch_size=4, normalize_embeddings=True)
    assert proxy.counts["throttled"] >= 3 and proxy.counts["dropped"] >= 3, proxy.counts
    # each 429 said Retry-After: 1, and that is what was waited before its retry
    assert waits.count(1.0) == proxy.counts["throttled"], (waits, proxy.counts)
    assert proxy.counts["forwarded"] == len(proxy.bodies)
    assert 2 <= proxy.max_in_flight <= 3
    assert proxy.authorization == {f"Bearer {API_KEY}"}
    count = token_counter(EncodeConfig().model, None, 256)
    for body in proxy.bodies:  # requests bounded by tokens (or one long text) and texts
        inputs = json.loads(body)["input"]
        assert len(inputs) <= 4 and (len(inputs) == 1 or sum(count(inputs)) <= 100)
    assert (x * local_vectors).sum(axis=1).min() >= 0.99


def test_a_400_is_one_clear_error_not_retried(embeddings_server):
    from tasks.encoders.model import model_fingerprint

    answer = api_error(400, "This model's maximum context length is 512 tokens")
    with FaultyProxy(embeddings_server, answer=answer) as proxy:
        with pytest.raises(EmbeddingApiError) as err:
            model_fingerprint(api_config(proxied(proxy)))
    message = str(err.value)
    assert f"{proxy.url}/v1/embeddings answered HTTP 400" in message
    assert "maximum context length is 512 tokens" in message
    assert proxy.counts["requests"] == 1 and API_KEY not in message


def test_a_wrong_key_is_refused_by_the_server_and_not_repeated(embeddings_server,
                                                               monkeypatch):
    wrong = "sk-embedpipe-WRONG-key-0000"
    monkeypatch.setenv(API_KEY_ENV, wrong)
    client = EmbeddingsClient(api_settings(api_config(embeddings_server)))
    with pytest.raises(EmbeddingApiError, match=r"HTTP 401: Unauthorized.*\$EMBEDPIPE_TEST_API_KEY "
                       r"\(set\)") as err:
        client.embed(["hello"], 384)
    assert wrong not in str(err.value)


def test_unreachable_server_fails_fast_with_the_url():
    from tasks.encoders.model import model_fingerprint

    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(EmbeddingApiError, match=r"embeddings: no usable answer after 3 "
                       r"attempts \(last: ConnectError") as err:
        model_fingerprint(api_config(url, api_retries=2))
    assert time.monotonic() - started < 10
    assert str(err.value).startswith(f"{url}/embeddings")


def _drop_last_vector(path: str, body: bytes) -> bytes | None:
    answer = json.loads(body)
    if len(answer["data"]) < 2:
        return None  # the probe passes: the refusal under test is an encode answer's
    answer["data"].pop()
    return json.dumps(answer).encode()


def _shorten_a_vector(path: str, body: bytes) -> bytes | None:
    answer = json.loads(body)
    if len(answer["data"]) < 2:
        return None
    answer["data"][1]["embedding"].pop()
    return json.dumps(answer).encode()


@pytest.mark.parametrize(("rewrite", "refusal"), [
    (_drop_last_vector, r"embeddings: 7 vectors for 8 inputs; answer refused"),
    (_shorten_a_vector, r"embeddings: vector 1 has 383 dimensions, expected 384; answer "
                        r"refused")])
def test_a_wrong_answer_is_refused(embeddings_server, rewrite, refusal):
    with FaultyProxy(embeddings_server, rewrite=rewrite) as proxy:
        with pytest.raises(ValueError, match=refusal):
            encoder_through(proxied(proxy)).encode(TEXTS[:8], batch_size=8)
    assert proxy.counts["rewritten"] == 1


@pytest.fixture(scope="module")
def chunked(sample_run, tmp_path_factory):
    """A workspace with the sample ingested, cleaned and chunked."""
    return copy_workspace(sample_run, tmp_path_factory.mktemp("openai") / "ws",
                          through="finetune")


def test_encode_stage_through_the_api_then_a_free_rerun(embeddings_server, chunked, caplog):
    from tasks.core.params_file import write_overrides
    from tasks.query.search import load_index_folder

    with FaultyProxy(embeddings_server) as proxy:
        write_overrides(chunked / "params.yaml", {
            "encode.backend": "openai", "encode.api_base_url": proxied(proxy),
            "encode.api_model": SERVED_MODEL, "encode.api_key_env": API_KEY_ENV})
        with caplog.at_level(logging.DEBUG):
            run_stages(chunked, ("encode",))
            first = proxy.counts["requests"]
            run_stages(chunked, ("encode",))
            again = proxy.counts["requests"] - first
            run_stages(chunked, ("reduce", "dedup", "index"))
        hits = load_index_folder(chunked / "data/07_index").search_text(
            ["how a collapsed star becomes a neutron star"], k=3, mode="dense")[0]
    manifest = json.loads((chunked / "data/04_encode/_manifest.json").read_text())
    rows = manifest["rows"]
    assert first > 1 and again == 0, (first, again)  # the rerun: probe and vectors cached
    assert rows["encoded"] == 0 and rows["reused"] == rows["unique_texts"] > 100, rows
    assert manifest["model"]["backend"] == "openai" and manifest["device"] == "api"
    assert hits[0]["source"].startswith("astronomy/"), hits
    assert proxy.authorization == {f"Bearer {API_KEY}"}  # the key was used...
    for path in chunked.rglob("*"):  # ...and written nowhere, logged nowhere
        if path.is_file() and ".git" not in path.parts:
            assert API_KEY.encode() not in path.read_bytes(), path
    assert API_KEY not in caplog.text


def test_a_refused_answer_writes_nothing(embeddings_server, chunked):
    from tasks.core.params_file import write_overrides
    from tasks.encoders.model import model_fingerprint

    with FaultyProxy(embeddings_server, rewrite=_drop_last_vector) as proxy:
        write_overrides(chunked / "params.yaml", {
            "encode.backend": "openai", "encode.api_base_url": proxied(proxy),
            "encode.api_model": SERVED_MODEL, "encode.api_key_env": API_KEY_ENV})
        output = chunked / "data/04_encode/vectors.parquet"
        before = output.read_bytes() if output.exists() else None
        with pytest.raises(ValueError, match="vectors for .* inputs; answer refused"):
            run_stages(chunked, ("encode",))
        space = model_fingerprint(api_config(proxied(proxy)))["fingerprint"]
    assert (output.read_bytes() if output.exists() else None) == before
    assert not (chunked / "data/cache/vectors" / space[:32]).exists()


def test_token_batches_bound_tokens_and_texts():
    assert token_batches([3, 3, 3, 10, 1, 1], max_tokens=6, max_texts=10) == [
        (0, 2), (2, 3), (3, 4), (4, 6)]
    assert token_batches([1] * 5, max_tokens=100, max_texts=2) == [(0, 2), (2, 4), (4, 5)]
    assert token_batches([], 10, 10) == []


def test_retry_delay_honours_retry_after_else_backs_off():
    rng = random.Random(0)
    assert retry_delay(0, "2", rng) == 2.0
    assert retry_delay(3, "0", rng) == 0.0
    assert retry_delay(0, "Wed, 21 Oct 2015 07:28:00 GMT", rng) == 0.0  # a date now past
    assert 9.0 < retry_delay(0, format_datetime(datetime.now(UTC) + timedelta(seconds=10),
                                                usegmt=True), rng) <= 10.0
    assert 0.25 <= retry_delay(0, None, rng) <= 0.5
    assert 2.0 <= retry_delay(3, None, rng) <= 4.0
    assert retry_delay(20, "bogus", rng) <= 30.0


@pytest.mark.parametrize(("answer", "refusal"), [
    ({"object": "list"}, "no 'data' list"),
    ({"data": [{"index": 0, "embedding": [0.1, 0.2]}, {"index": 0, "embedding": [0.1, 0.2]}]},
     r"indexes are not 0..1 each once \(e.g. \['1'\]\)"),
    ({"data": [{"index": 0, "embedding": [0.1, 0.2]}, {"index": 1, "embedding": "AAAA"}]},
     "vector 1 has -1 dimensions, expected 2"),
    ({"data": [{"index": 1, "embedding": [0.1, float("nan")]},
               {"index": 0, "embedding": [0.1, 0.2]}]}, "NaN or infinite")])
def test_malformed_answers_are_refused(answer, refusal):
    with pytest.raises(ValueError, match=refusal):
        parse_embeddings(answer, 2, 2, "http://h:1/v1/embeddings")


def test_a_probe_answer_without_a_float_list_is_refused():
    answer = {"data": [{"index": 0, "embedding": "AAAAPw=="}]}  # base64, not asked for
    with pytest.raises(ValueError, match="vector 0 is not a list of numbers"):
        parse_embeddings(answer, 1, None, "u")


def test_answers_are_put_back_in_input_order():
    answer = {"data": [{"index": 1, "embedding": [0.0, 1.0]},
                       {"index": 0, "embedding": [1.0, 0.0]}]}
    x = parse_embeddings(answer, 2, None, "u")
    np.testing.assert_array_equal(x, [[1.0, 0.0], [0.0, 1.0]])


@pytest.mark.parametrize(("encode", "message"), [
    ({"backend": "openai"}, "backend 'openai' needs api_base_url"),
    ({"backend": "openai", "api_base_url": "http://u:sk-inurl-secret@h:1/v1"},
     "no user, password, query or fragment"),
    ({"backend": "openai", "api_base_url": "http://h:1/v1", "precision": "int8"},
     "the server decides the numerics"),
    ({"api_key_env": "not a name"}, "api_key_env")])
def test_openai_settings_are_checked_at_load_time(encode, message):
    with pytest.raises(ValueError, match=message) as err:
        parse_params({"encode": encode})
    assert "sk-inurl-secret" not in str(err.value)
