"""The `openai` backend: vectors from a server's OpenAI-compatible `/v1/embeddings`.

Requests hold at most `api_batch_tokens` tokens (counted with encode.model's local tokenizer)
and `batch_size` texts, `api_concurrency` at a time. 429, 5xx and dropped connections are
retried with backoff (the server's `Retry-After` honoured); any other 4xx is an error naming
the status, the URL and the server's message. Every answer is checked (one vector per input,
each index once, the expected dimension, finite numbers) before a vector is used.

The key is read from the environment variable `api_key_env` names, at request time, and
goes only into the Authorization header: never into a fingerprint, a message or a log line.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np

from tasks.core.config import EncodeConfig

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 30.0  # exponential backoff (0.5 s, 1 s, 2 s...) stops growing here
MAX_RETRY_AFTER_S = 300.0  # a longer Retry-After is waited this long, then retried
CONNECT_TIMEOUT_S = 10.0  # an unreachable host fails this fast, whatever api_timeout_s says
MAX_INPUTS = 2048  # OpenAI's own cap on inputs per request
PROBE_TEXT = "What dimension are your vectors?"
MESSAGE_CHARS = 500  # of a server's error body quoted in an error


class EmbeddingApiError(RuntimeError):
    """The server refused a request, or could not be reached within the retries."""


@dataclass(frozen=True)
class ApiSettings:
    """Where and how to ask: base URL (no trailing slash), served model, key variable."""

    base_url: str
    model: str
    key_env: str
    timeout_s: float
    retries: int

    @property
    def url(self) -> str:
        return f"{self.base_url}/embeddings"


def api_settings(cfg: EncodeConfig) -> ApiSettings:
    """The server `cfg` names (`api_model` null: encode.model's name)."""
    if not cfg.api_base_url:
        raise ValueError("encode.api_base_url: backend openai needs the server's base URL")
    return ApiSettings(cfg.api_base_url.rstrip("/"), cfg.api_model or cfg.model,
                       cfg.api_key_env, cfg.api_timeout_s, cfg.api_retries)


def api_host(url: str) -> str:
    """scheme://host:port of `url` (default port made explicit, no credentials)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return f"{parts.scheme}://{host}:{port}"


def api_path(url: str) -> str:
    """The path of a base URL, without its trailing slash ('/v1')."""
    return urlsplit(url).path.rstrip("/")


def retry_delay(attempt: int, retry_after: str | None, rng: random.Random) -> float:
    """Seconds to wait before retry `attempt` + 1: the server's Retry-After (seconds or an
    HTTP date) when it sent one, else exponential backoff with jitter."""
    if retry_after:
        try:
            return min(max(float(retry_after), 0.0), MAX_RETRY_AFTER_S)
        except ValueError:
            try:
                wait = parsedate_to_datetime(retry_after).timestamp() - time.time()
                return min(max(wait, 0.0), MAX_RETRY_AFTER_S)
            except (TypeError, ValueError):
                pass  # unreadable: back off as if it were absent
    return min(MAX_BACKOFF_S, 0.5 * 2 ** attempt) * (0.5 + rng.random() / 2)


def token_batches(counts: Sequence[int], max_tokens: int, max_texts: int
                  ) -> list[tuple[int, int]]:
    """Consecutive (start, stop) runs of texts holding at most `max_tokens` tokens and
    `max_texts` texts each; a text longer than `max_tokens` goes alone."""
    batches, start, tokens = [], 0, 0
    for i, n in enumerate(counts):
        if i > start and (tokens + n > max_tokens or i - start >= max_texts):
            batches.append((start, i))
            start, tokens = i, 0
        tokens += n
    if start < len(counts):
        batches.append((start, len(counts)))
    return batches


def parse_embeddings(payload: Any, n: int, dim: int | None, url: str) -> np.ndarray:
    """(n, d) float32 vectors of an embeddings answer, in input order; ValueError unless it
    holds exactly one finite `dim`-d vector (any d when `dim` is None) per input index."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        raise ValueError(f"{url}: the answer has no 'data' list; not an embeddings response")
    if len(data) != n:
        raise ValueError(f"{url}: {len(data)} vectors for {n} inputs; answer refused")
    index = [item.get("index") if isinstance(item, dict) else None for item in data]
    if sorted(index, key=str) != sorted(range(n), key=str):
        odd = sorted({str(i) for i in index} ^ {str(i) for i in range(n)})[:5]
        raise ValueError(f"{url}: vector indexes are not 0..{n - 1} each once (e.g. {odd}); "
                         "answer refused")
    vectors = [item.get("embedding") for item in data]
    want = dim if dim is not None else _length(vectors[0]) if vectors else 0
    if n and want < 1:
        raise ValueError(f"{url}: vector {index[0]} is not a list of numbers; answer refused")
    for i, v in zip(index, vectors, strict=True):
        if _length(v) != want:
            raise ValueError(f"{url}: vector {i} has {_length(v)} dimensions, expected {want}; "
                             "answer refused")
    x = np.zeros((n, want), dtype="float32")
    try:
        x[np.asarray(index, dtype="int64")] = np.asarray(vectors, "float32").reshape(n, want)
    except (TypeError, ValueError):
        raise ValueError(f"{url}: the vectors hold values that are not numbers; answer "
                         "refused") from None
    if not np.isfinite(x).all():
        raise ValueError(f"{url}: the answer holds NaN or infinite values; answer refused")
    return x


def _length(vector: Any) -> int:
    """Length of a float-list vector; -1 for anything else (a base64 string, a number)."""
    return len(vector) if isinstance(vector, list) else -1


def server_message(resp: httpx.Response) -> str:
    """The server's own explanation: OpenAI's error.message, FastAPI's detail, or the text."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:MESSAGE_CHARS].strip() or resp.reason_phrase
    if isinstance(body, dict):
        err = body.get("error")
        found = err.get("message") if isinstance(err, dict) else err or body.get("detail")
        if found:
            return str(found)[:MESSAGE_CHARS]
    return str(body)[:MESSAGE_CHARS]


class EmbeddingsClient:
    """POSTs to `<base_url>/embeddings`, retried; one connection pool shared by threads."""

    def __init__(self, settings: ApiSettings, sleep: Callable[[float], None] = time.sleep
                 ) -> None:
        self.settings, self.sleep = settings, sleep
        self.rng = random.Random()
        logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request; retries
        # and failures are logged here
        timeout = httpx.Timeout(settings.timeout_s,
                                connect=min(settings.timeout_s, CONNECT_TIMEOUT_S))
        self.http = httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=64))

    def close(self) -> None:
        self.http.close()

    def _key(self) -> str:
        return os.environ.get(self.settings.key_env, "")

    def _scrub(self, text: str) -> str:
        """`text` with the key masked, should a server echo it."""
        key = self._key()
        return text.replace(key, "***") if len(key) >= 4 else text

    def embed(self, texts: list[str], dim: int | None) -> np.ndarray:
        """(len(texts), d) float32 vectors of `texts`, in order, checked (`parse_embeddings`)."""
        body = {"model": self.settings.model, "input": texts, "encoding_format": "float"}
        return parse_embeddings(self._post(body), len(texts), dim, self.settings.url)

    def _post(self, body: dict[str, Any]) -> Any:
        """The decoded JSON answer; retries 429, 5xx and transport failures."""
        url, key = self.settings.url, self._key()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        attempts, last = self.settings.retries + 1, ""
        for attempt in range(attempts):
            try:
                resp = self.http.post(url, json=body, headers=headers)
            except httpx.RequestError as err:  # refused, reset, dropped, timed out
                last, retry_after = f"{type(err).__name__}: {err}", None
            else:
                if resp.status_code < 400:
                    return self._json(resp)
                last = f"HTTP {resp.status_code}: {server_message(resp)}"
                if resp.status_code != 429 and resp.status_code < 500:
                    raise EmbeddingApiError(self._refusal(resp))
                retry_after = resp.headers.get("retry-after")
            if attempt + 1 < attempts:
                wait = retry_delay(attempt, retry_after, self.rng)
                log.info("embeddings: %s from %s; retry %d/%d in %.1f s", self._scrub(last),
                         url, attempt + 1, attempts - 1, wait)
                self.sleep(wait)
        raise EmbeddingApiError(self._scrub(
            f"{url}: no usable answer after {attempts} attempts (last: {last}); check that "
            "the server runs there (encode.api_base_url) and its load"))

    def _refusal(self, resp: httpx.Response) -> str:
        """The error for a 4xx that retrying cannot mend: status, URL, the server's words."""
        hint = ""
        if resp.status_code in (401, 403):
            state = "set" if self._key() else "not set"
            hint = f"; the key comes from ${self.settings.key_env} ({state})"
        return self._scrub(f"{self.settings.url} answered HTTP {resp.status_code}: "
                           f"{server_message(resp)} (model {self.settings.model!r}; not "
                           f"retried{hint})")

    def _json(self, resp: httpx.Response) -> Any:
        try:
            return resp.json()
        except ValueError:
            raise ValueError(f"{self.settings.url}: HTTP {resp.status_code} with a body that is "
                             f"not JSON: {self._scrub(resp.text[:200])!r}") from None


@lru_cache(maxsize=8)
def probe_dimension(settings: ApiSettings) -> int:
    """The dimension of the server's vectors, from one short request; cached per process."""
    client = EmbeddingsClient(settings)
    try:
        return int(client.embed([PROBE_TEXT], None).shape[1])
    finally:
        client.close()


class OpenAIEncoder:
    """The subset of SentenceTransformer that embedpipe calls, answered by the server."""

    device = "api"

    def __init__(self, client: EmbeddingsClient, dim: int,
                 count_tokens: Callable[[list[str]], list[int]], batch_tokens: int,
                 concurrency: int) -> None:
        self.client, self.dim, self.count_tokens = client, dim, count_tokens
        self.batch_tokens, self.concurrency = batch_tokens, concurrency

    def get_embedding_dimension(self) -> int:
        return self.dim

    def encode(self, sentences: list[str], batch_size: int = 32,
               normalize_embeddings: bool = False, convert_to_numpy: bool = True,
               show_progress_bar: bool = False) -> np.ndarray:
        """(n, d) float32 vectors in input order; requests of at most `api_batch_tokens`
        tokens and `batch_size` texts, `api_concurrency` in flight. Nothing is returned
        unless every answer passed its checks."""
        del convert_to_numpy, show_progress_bar  # always numpy; progress is the caller's
        sentences = list(sentences)
        out = np.zeros((len(sentences), self.dim), dtype="float32")
        if not sentences:
            return out
        runs = token_batches(self.count_tokens(sentences), self.batch_tokens,
                             min(batch_size, MAX_INPUTS))
        pool = ThreadPoolExecutor(min(self.concurrency, len(runs)))
        try:
            parts = pool.map(lambda r: self.client.embed(sentences[r[0]:r[1]], self.dim), runs)
            for (start, stop), x in zip(runs, parts, strict=True):
                out[start:stop] = x
        finally:  # after a failure, requests not yet sent are not sent
            pool.shutdown(wait=True, cancel_futures=True)
        if normalize_embeddings:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out
