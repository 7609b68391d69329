"""Typed configuration: one pydantic model per stage, a root `Params` mirroring params.yaml.

`load_params` is the one place YAML is read. Unknown keys, wrong types and impossible
combinations fail at load time with the key path and what is allowed.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tasks.core.registry import STAGE_NAMES

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
CACHE_ENV = "EMBEDPIPE_CACHE_DIR"
# PyYAML's safe loader on libyaml's C parser where PyYAML has it (the same types; 4x faster:
# params.yaml is read about 14 times a run and once by every stage process); a file it
# refuses is read again by the Python parser, for its clearer message
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def cache_root() -> Path:
    """The user-level cache (ONNX exports, fetched published indexes): `$EMBEDPIPE_CACHE_DIR`,
    else `$XDG_CACHE_HOME/embedpipe`, else `~/.cache/embedpipe`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "embedpipe"


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathsConfig(_Config):
    """Where stage outputs live, relative to the workspace root."""

    data: str = Field("data", description="Folder that holds the numbered stage outputs.")
    runs: str = Field("runs/registry.jsonl", description="Append-only registry of runs.")
    vector_cache: str = Field(
        "data/cache/vectors", description="Content-addressed vector store (persistent)."
    )
    result_cache: str = Field(
        "data/cache/results", description="Content-addressed per-document results of clean "
        "and chunk (persistent): a rerun computes only new or changed documents.")

    @field_validator("data", "vector_cache", "runs")
    @classmethod
    def _check_local(cls, value: str) -> str:
        # DVC 3 no longer caches outputs outside the workspace ("cached external outputs"),
        # and every stage output is a cached DVC out, so they stay on a local filesystem.
        if "://" in value:
            raise ValueError(
                "expected a local (or mounted) path: stage outputs and the vector cache are "
                "DVC-cached outs, which DVC 3 keeps on a local filesystem only, and the run "
                "registry is appended in place; put the Dask workers' shard files on S3 "
                "with run.dask.scratch: s3://bucket/prefix")
        return value


class DaskConfig(_Config):
    """Where sharded stages run when `run.executor` is `dask`."""

    address: str | None = Field(
        None, description="An existing Dask scheduler (tcp://host:8786); null starts a "
        "LocalCluster of `workers` processes for the run and stops it after.")
    workers: Annotated[int, Field(ge=1, le=1024)] = Field(
        2, description="LocalCluster worker processes.")
    threads_per_worker: Annotated[int, Field(ge=1, le=256)] = 1
    connect_timeout_s: Annotated[float, Field(gt=0)] = Field(
        10.0, description="How long to wait for `address` to answer.")
    shard_rows: Annotated[int, Field(ge=1)] = Field(
        2048, description="Records per shard sent to a worker (clean, chunk, encode, index, "
        "dedup's text keys).")
    max_in_flight: Annotated[int, Field(ge=1)] | None = Field(
        None, description="Shards submitted and not yet written (driver memory); null: 2 per "
        "worker thread.")
    retries: Annotated[int, Field(ge=0, le=10)] = Field(
        2, description="Times a shard is retried when it fails (a worker lost mid-shard is "
        "rescheduled by Dask itself).")
    scratch: str | None = Field(
        None, description="Where workers exchange shard files (dedup by cell, an on-disk "
        "index): null: a folder under paths.data, which the workers must see at the same "
        "path; s3://bucket/prefix: through S3 (the driver uploads a stage's input once, "
        "workers read it by byte range and put their shards there).")
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint of `scratch` (e.g. http://minio:9000).")
    s3_region: str | None = Field(None, description="S3 region; null: boto3's default chain.")
    s3_max_attempts: Annotated[int, Field(ge=1, le=50)] = Field(
        10, description="Attempts per S3 call (standard retry mode, with backoff).")

    @field_validator("scratch")
    @classmethod
    def _check_scratch(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"s3://[^/]+", value):
            raise ValueError("expected null (a folder under paths.data) or s3://bucket/prefix")
        return value


class RunConfig(_Config):
    """Run-wide settings: timeouts, schedule, what a second concurrent run does, where the
    heavy stages run."""

    stage_timeout_s: Annotated[int, Field(ge=1)] = Field(
        6 * 3600, description="Upper bound on one stage's wall time (Prefect runs)."
    )
    stage_timeouts: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict, description="Per-stage timeouts overriding stage_timeout_s."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING"] = Field(
        "INFO", description="Log level of the stages (flow runs and `python -m tasks.<stage>`).")
    server_idle_s: Annotated[float, Field(ge=0)] = Field(
        600, description="With no Prefect API configured, `embedpipe run` starts Prefect's "
        "temporary server: kept up for the next run until this many seconds pass without one "
        "(0: it stops with its run). `embedpipe server stop` stops it now.")
    schedule_cron: str = Field("0 3 * * *", description="Cron of the `nightly` deployment.")
    timezone: str = Field("UTC", description="IANA time zone of the schedule.")
    on_busy: Literal["wait", "fail"] = Field(
        "wait", description="When another run holds the workspace: wait for it, or fail now."
    )
    lock_wait_s: Annotated[float, Field(ge=0)] = Field(
        3600, description="How long 'wait' waits for the workspace."
    )
    executor: Literal["local", "dask"] = Field(
        "local", description="local: shards run in this process; dask: on a Dask cluster "
        "(clean, chunk, encode, dedup by k-means cell and the index's adds; dedup and an "
        "on-disk index need paths.data on storage the workers share). Outputs are the same "
        "either way.")
    dask: DaskConfig = Field(DaskConfig(), description="The Dask cluster when executor is dask.")

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # noqa: PLC0415

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone {self.timezone!r} is not an IANA zone name") from None
        unknown = sorted(set(self.stage_timeouts) - set(STAGE_NAMES))
        if unknown:
            raise ValueError(f"stage_timeouts: unknown stages {unknown}; stages are {STAGE_NAMES}")
        if len(self.schedule_cron.split()) != 5:
            raise ValueError(f"schedule_cron {self.schedule_cron!r}: expected 5 cron fields")
        return self


class IngestConfig(_Config):
    """Which files become documents, and how tabular records map to text."""

    source: str = Field(
        "data/sample", description="Local folder, or s3://bucket/prefix, to ingest recursively."
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, Ceph...); null: AWS or AWS_ENDPOINT_URL."
    )
    s3_region: str | None = Field(None, description="S3 region; null: boto3's default chain.")
    s3_max_attempts: Annotated[int, Field(ge=1, le=50)] = Field(
        10, description="Attempts per S3 request (throttling and dropped connections retry)."
    )
    include: tuple[str, ...] = Field(("**/*",), description="Glob patterns of files to read.")
    exclude: tuple[str, ...] = Field(
        ("**/.*", "**/.*/**", "**/queries.jsonl", "**/qrels/**"),
        description="Glob patterns skipped (BEIR queries and qrels are not documents).",
    )
    code_extensions: tuple[str, ...] = Field(
        (".py", ".js", ".ts", ".java", ".go", ".rs", ".c", ".h", ".cpp", ".hpp",
         ".cs", ".rb", ".php", ".sh", ".sql", ".scala", ".kt", ".swift"),
        description="File extensions read as source code (chunked at definitions).",
    )
    text_columns: tuple[str, ...] = Field(
        ("text", "body", "content"), description="Record text column: the first one present."
    )
    id_columns: tuple[str, ...] = Field(
        ("_id", "id", "doc_id", "doc_key"), description="Record key column: the first present."
    )
    title_columns: tuple[str, ...] = Field(("title", "heading"), description="Optional title.")
    metadata_columns: tuple[str, ...] | None = Field(
        None, description="Record columns kept as metadata; null keeps all the others."
    )
    max_file_mb: Annotated[float, Field(gt=0)] = Field(
        200.0, description="Files larger than this (MB) are rejects, never read."
    )
    max_doc_mb: Annotated[float, Field(gt=0)] = Field(
        4.0, description="A text file longer than this (MB) becomes several documents "
        "(record keys part-00001...), cut at paragraph, line or word breaks: memory stays "
        "bounded, nothing is truncated."
    )

    @model_validator(mode="after")
    def _check(self) -> IngestConfig:
        if not self.include:
            raise ValueError("include must list at least one glob pattern")
        if not self.text_columns:
            raise ValueError("text_columns must list at least one column name")
        bad = [e for e in self.code_extensions if not e.startswith(".")]
        if bad:
            raise ValueError(f"code_extensions must start with '.', got {bad}")
        return self


class CleanConfig(_Config):
    """Text normalisation. Defaults keep case and word forms (they carry signal)."""

    fix_unicode: bool = Field(True, description="Repair mojibake with ftfy, then NFC.")
    lowercase: bool = Field(False, description="Lowercase the text (only when case carries "
                            "no signal).")
    normalize_words: Literal["none", "lemmatize", "stem"] = Field(
        "none", description="spaCy lookup lemmatizer or Snowball stemmer."
    )
    strip_code_comments: bool = Field(False, description="Drop comments from source code.")
    html_main_content: bool = Field(
        False, description="HTML: keep the page's main content only (navigation, menus, "
        "sidebars and footers out).")
    min_chars: Annotated[int, Field(ge=1)] = Field(
        20, description="Documents shorter than this after cleaning are rejected."
    )


class ChunkConfig(_Config):
    """How cleaned documents are cut into passages the encoder sees whole."""

    strategy: Literal["sentence", "sliding_window", "recursive"] = Field(
        "sentence", description="sentence: whole sentences packed to max_tokens; "
        "sliding_window: fixed token windows; recursive: paragraphs, then lines, then words.")
    max_tokens: Annotated[int, Field(ge=8, le=8192)] = Field(
        200, description="Token budget per chunk, counted with the encoder's tokenizer."
    )
    overlap_sentences: Annotated[int, Field(ge=0, le=10)] = Field(
        1, description="Sentences repeated at the start of the next chunk (sentence/recursive)."
    )
    window_overlap: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        0.15, description="Overlap ratio between sliding windows."
    )
    context: Literal["none", "title", "headings"] = Field(
        "none", description="What each chunk is encoded and BM25-indexed with before its "
        "text: none; title: its document's title; headings: the title and the headings the "
        "chunk sits under (markdown and HTML). The chunk's text and offsets stay the clean "
        "text's.")
    context_tokens: Annotated[int, Field(ge=4, le=128)] = Field(
        32, description="Token budget of a chunk's context (a longer trail loses its middle "
        "headings); the text's budget is what the model leaves after it, at most max_tokens.")

    @model_validator(mode="after")
    def _check(self) -> ChunkConfig:
        if self.strategy != "sliding_window" and self.overlap_sentences * 8 >= self.max_tokens:
            raise ValueError(
                f"overlap_sentences ({self.overlap_sentences}) leaves no room for new text in "
                f"a {self.max_tokens}-token chunk; use fewer overlap sentences"
            )
        return self


class FinetuneConfig(_Config):
    """The optional, gated fine-tune of encode.model on the corpus (no labels needed)."""

    enabled: bool = Field(False, description="Fine-tune encode.model on the corpus; off: "
                          "encode uses encode.model as it is.")
    pairs: str | None = Field(
        None, description="The user's own pairs besides the mined ones: a JSONL of "
        "{query, positive} or a BEIR folder (queries.jsonl, qrels/train.tsv beside an "
        "ingested corpus.jsonl), relative to the workspace.")
    kinds: tuple[Literal["cloze", "heading", "neighbour"], ...] = Field(
        ("cloze", "heading", "neighbour"), description="Pair kinds mined from the chunks: "
        "a sentence -> its chunk without it, a heading -> its section, a chunk -> the next.")
    holdout: Annotated[float, Field(gt=0.0, lt=0.9)] = Field(
        0.2, description="Share of documents never trained on; the gate scores on them.")
    max_pairs: Annotated[int, Field(ge=16)] = Field(
        20000, description="Mined pairs at most (a seeded sample).")
    cloze_keep: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.1, description="Share of cloze pairs whose positive keeps the sentence.")
    negatives: Literal["none", "bm25", "dense", "both"] = Field(
        "none", description="Hard negatives per pair: BM25 and/or the base model's nearest "
        "chunks, never from the positive's document or duplicate group.")
    loss: Literal["cached_mnrl", "gist"] = Field(
        "cached_mnrl", description="cached_mnrl: in-batch negatives (GradCache); gist: the "
        "frozen base model drops in-batch false negatives.")
    batch_size: Annotated[int, Field(ge=2, le=4096)] = Field(
        32, description="Pairs per step (the in-batch negatives of each pair).")
    learning_rate: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(
        2e-5, description="AdamW's peak learning rate (after a 10% warm-up).")
    max_seq_length: Annotated[int, Field(ge=16)] = Field(
        128, description="Tokens per text while training (the saved model keeps its own).")
    max_steps: Annotated[int, Field(ge=1)] = Field(
        110, description="Optimizer steps at most (one epoch of the pairs at most).")
    max_minutes: Annotated[float, Field(gt=0.0)] = Field(
        20.0, description="A guard, never a stop: training that would take longer (judged "
        "from its first steps) fails before a model is written; the steps decide the model.")
    min_gain: Annotated[float, Field(ge=-1.0, le=1.0)] = Field(
        0.005, description="The tuned model is used only if the lower confidence bound of "
        "its paired gain on gate_metric over the held-out queries is above this (negative: "
        "also when no better, to keep a tuned model for study).")
    gate_confidence: Annotated[float, Field(ge=0.5, lt=1.0)] = Field(
        0.95, description="Two-sided confidence of the gate's bootstrap interval of the gain.")
    gate_metric: Literal["recall_at_1", "recall_at_10", "ndcg_at_10"] = Field(
        "ndcg_at_10", description="The held-out metric the gate compares.")
    gate_queries: Annotated[int, Field(ge=10)] = Field(
        2000, description="Held-out probes the gate scores at most (one per held-out chunk).")
    gate_chunks: Annotated[int, Field(ge=100)] = Field(
        10000, description="Chunks the gate's probes are searched in: every held-out chunk, "
        "then a seeded sample of the others.")
    retrain_churn: Annotated[float, Field(ge=0.0)] = Field(
        0.2, description="Train again once chunks added + changed + removed since the last "
        "training exceed this share of the chunks it saw; below it the model and its gate "
        "verdict are kept (0: train again on any change).")
    seed: int = Field(0, description="Seed of the split, the pairs, the negatives, training.")


EXPORTED_BACKENDS = ("openvino", "onnx")  # run an export of the model on the CPU


def precision_problem(backend: str, precision: str) -> str | None:
    """Why `precision` cannot run on `backend` (a resolved one, or as the params say), or
    None."""
    exported = backend in EXPORTED_BACKENDS
    return {("int8", False): "int8 needs backend openvino or onnx",
            ("fp16", True): "fp16 needs backend torch on cuda",
            ("bf16", True): "bf16 needs backend torch"}.get((precision, exported))


class EncodeConfig(_Config):
    """Which model embeds the chunks and how."""

    model: str = Field(DEFAULT_MODEL, description="sentence-transformers name or local path.")
    revision: str | None = Field(None, description="Model revision (hub models).")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="auto: cuda when present, else mps, else cpu.")
    batch_size: Annotated[int, Field(ge=1, le=4096)] = Field(
        32, description="Texts per forward pass of the encoder.")
    normalize: bool = Field(True, description="L2-normalise vectors as they are produced.")
    passage_prefix: str | None = Field(
        None, description="Prepended to every chunk, e.g. 'passage: '; null: the model's own "
        "document prompt when it declares prompts, else nothing.")
    query_prefix: str | None = Field(
        None, description="Prepended to queries (an instruction, e.g. 'query: '); null: the "
        "model's own query prompt when it declares prompts, else nothing.")
    max_seq_length: Annotated[int, Field(ge=8)] | None = Field(
        None, description="Override the model's max_seq_length (never above its limit)."
    )
    backend: Literal["auto", "torch", "openvino", "onnx", "openai"] = Field(
        "auto", description="auto: openvino (exported here) on the CPU, torch on cuda/mps; "
        "onnx: onnxruntime (exported here); openai: a server's OpenAI-compatible "
        "/v1/embeddings (api_base_url).")
    precision: Literal["auto", "fp32", "fp16", "bf16", "int8"] = Field(
        "auto", description="auto: int8 for openvino and onnx, fp16 for torch on cuda, fp32 "
        "otherwise. int8 is openvino (static, calibrated on a fixed text set) or onnx "
        "(dynamic, one text per call); fp16 is cuda only; bf16 is torch; openai: auto only "
        "(the server decides).")
    cache: bool = Field(True, description="Reuse vectors of texts already encoded.")
    api_base_url: str | None = Field(
        None, description="backend openai: the server's base URL, e.g. "
        "http://127.0.0.1:7997/v1 (embeddings at <url>/embeddings); no credentials in it.")
    api_model: str | None = Field(
        None, description="backend openai: the model name the server serves; null: "
        "encode.model. encode.model's local tokenizer still counts chunk budgets.")
    api_key_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] = Field(
        "OPENAI_API_KEY", description="backend openai: the environment variable holding the "
        "API key (sent as a Bearer token; unset: no key). The key itself is never a setting.")
    api_batch_tokens: Annotated[int, Field(ge=1)] = Field(
        8192, description="backend openai: tokens per request at most (encode.model's "
        "tokenizer), and at most batch_size texts.")
    api_concurrency: Annotated[int, Field(ge=1, le=64)] = Field(
        4, description="backend openai: requests in flight at once.")
    api_timeout_s: Annotated[float, Field(gt=0)] = Field(
        60.0, description="backend openai: seconds to connect, and to wait for each answer.")
    api_retries: Annotated[int, Field(ge=0, le=20)] = Field(
        5, description="backend openai: retries of a request after 429, 5xx or a dropped "
        "connection (backoff, or the server's Retry-After).")

    @model_validator(mode="after")
    def _check(self) -> EncodeConfig:
        bad = None if self.backend == "auto" else precision_problem(self.backend,
                                                                    self.precision)
        if self.backend == "openai" and self.precision != "auto":
            bad = "the server decides the numerics; use precision auto"
        if bad:
            raise ValueError(f"precision {self.precision!r} with backend {self.backend!r}: {bad}")
        if self.backend == "openai" and not self.api_base_url:
            raise ValueError("backend 'openai' needs api_base_url (e.g. http://127.0.0.1:7997/v1)")
        if self.api_base_url is not None:
            check_api_base_url(self.api_base_url)
        return self


def check_api_base_url(url: str) -> None:
    """Refuse a base URL that is not plain http(s) or that carries credentials (the key
    comes from the environment only); the message never repeats the URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("api_base_url: expected http(s)://host[:port]/path")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("api_base_url: no user, password, query or fragment in the URL; "
                         "the key comes from the environment variable api_key_env names")


class ReduceConfig(_Config):
    """Optional PCA (fit on a bounded sample), whitening and L2 normalisation."""

    pca_dims: Annotated[int, Field(ge=1)] | None = Field(None, description="null keeps all.")
    whiten: bool = Field(False, description="Scale PCA components to unit variance (needs "
                         "pca_dims).")
    l2_normalize: bool = Field(True, description="Unit-length vectors after PCA (inner "
                               "product = cosine).")
    fit_sample: Annotated[int, Field(ge=100)] = Field(
        100_000, description="Vectors the PCA is fitted on (a seeded sample).")
    seed: int = Field(0, description="Seed of the fit sample.")

    @model_validator(mode="after")
    def _check(self) -> ReduceConfig:
        if self.whiten and self.pca_dims is None:
            raise ValueError("whiten needs pca_dims (whitening is done in the PCA basis)")
        return self


class DedupConfig(_Config):
    """Exact (normalised text) and near-duplicate (cosine) removal."""

    exact: bool = Field(True, description="Drop chunks whose normalised text repeats.")
    near: bool = Field(True, description="Drop chunks within threshold cosine of a kept one.")
    threshold: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.95, description="Cosine similarity at or above which two chunks are duplicates."
    )
    exact_search_below: Annotated[int, Field(ge=1)] = Field(
        50_000, description="Below this many vectors, neighbours are searched exactly."
    )
    nprobe: Annotated[int, Field(ge=1)] = Field(
        8, description="From exact_search_below on: k-means cells each vector searches "
        "(more finds more pairs whose rows fall in different cells, linearly slower)."
    )
    seed: int = Field(0, description="Seed of the k-means cells.")


class IndexConfig(_Config):
    """FAISS index over the deduplicated vectors (inner product on normalised vectors)."""

    factory: str = Field(
        "auto",
        description="FAISS factory string ('IVF{nlist},Flat', 'IVF{nlist},PQ16', 'HNSW32', "
        "'Flat') or 'auto': exact (Flat) while a cost model of n and d (never a timing) "
        "keeps one query within max_query_ms, else IVF-Flat tuned to target_recall; "
        "IVF-PQ when float vectors exceed max_memory_mb.",
    )
    nlist: Literal["auto"] | Annotated[int, Field(ge=1)] = Field(
        "auto", description="IVF lists; auto: about 4 sqrt(n), at least 39 training points each.")
    nprobe: Literal["auto"] | Annotated[int, Field(ge=1)] = Field(
        "auto", description="IVF lists searched; auto: the smallest reaching target_recall.")
    target_recall: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.99, description="nprobe 'auto' picks the smallest meeting this recall@10 vs exact."
    )
    max_query_ms: Annotated[float, Field(gt=0.0)] = Field(
        5.0, description="factory 'auto': the exact index is kept while one query (batch of "
        "one) is estimated at most this many milliseconds: n x d values scanned at a fixed "
        "rate (tasks.indexing.factory.SCAN_VALUES_PER_MS), the same on every machine and load.")
    max_memory_mb: Annotated[float, Field(gt=0.0)] | None = Field(
        None, description="factory 'auto': when n x d float32 vectors exceed this (MB), "
        "IVF-PQ with the longest codes that fit; null: no bound.")
    train_sample: Annotated[int, Field(ge=1000)] = Field(
        200_000, description="Vectors the index is trained on (a seeded sample).")
    tune_queries: Annotated[int, Field(ge=10)] = Field(
        500, description="Query-like probes the search parameter is tuned on.")
    retrain_growth: Annotated[float, Field(ge=0.0)] = Field(
        0.2, description="Retrain once vectors added + removed since training exceed this "
        "fraction of the training size; below it the trained index is updated in place."
    )
    doc_vectors: Literal["mean", "token_mean", "none"] = Field(
        "mean", description="Document vectors beside the chunk index (`search --level doc`): "
        "the normalised mean of a document's chunk vectors, token-weighted, or none.")
    seed: int = Field(0, description="Seed of every sample and of k-means.")
    on_disk: Literal["auto"] | bool = Field(
        "auto", description="IVF inverted lists in index.ivfdata beside index.faiss, filled "
        "in shards, merged on disk and memory-mapped at query time: true, false, or auto "
        "(past memory_budget_mb). Other index types stay in memory.")
    memory_budget_mb: Annotated[float, Field(gt=0)] = Field(
        4096, description="on_disk auto: lists (codes + 8-byte ids) larger than this go on "
        "disk.")

    @model_validator(mode="after")
    def _check(self) -> IndexConfig:
        if "{nlist}" not in self.factory and self.nlist != "auto":
            if not self.factory.startswith("IVF"):
                raise ValueError(f"nlist is set but factory {self.factory!r} is not an IVF index")
        return self


class EvaluateConfig(_Config):
    """Evaluation of the vectors and the index, and the quality gate."""

    sample_queries: Annotated[int, Field(ge=1)] = Field(
        1000, description="Corpus vectors used as probes for index recall vs exact search."
    )
    probe_docs: Annotated[int, Field(ge=1)] = Field(
        500, description="Documents probed without labels: title or one sentence as the query."
    )
    label_field: str | None = Field(
        "source_folder",
        description="Label for NMI/ARI and map colours: 'source_folder' (first folder of the "
        "source path), a metadata key, or null.",
    )
    health_sample: Annotated[int, Field(ge=10)] = Field(
        2000, description="Vectors sampled for the space-health metrics and histogram.")
    plot_sample: Annotated[int, Field(ge=10)] = Field(
        1000, description="Points on the map plot (of the health sample).")
    min_index_recall: Annotated[float, Field(ge=0.0, le=1.0)] | None = Field(
        0.9, description="Gate: index recall@10 vs exact search at the tuned parameter."
    )
    min_probe_recall_at_10: Annotated[float, Field(ge=0.0, le=1.0)] | None = Field(
        0.3, description="Gate: document recall@10 of the label-free probe."
    )
    min_dense_probe_recall_at_10: Annotated[float, Field(ge=0.0, le=1.0)] | None = Field(
        0.3, description="Gate: the label-free probe's recall@10 in dense mode alone (catches "
        "broken embeddings that BM25 would hide in hybrid mode).")
    min_labeled_ndcg_at_10: Annotated[float, Field(ge=0.0, le=1.0)] | None = Field(
        None, description="Gate: nDCG@10 on BEIR queries/qrels, when the corpus has them."
    )
    tuned_compare_chunks: Annotated[int, Field(ge=0)] = Field(
        20000, description="With a fine-tuned model: the probes are searched by the base and "
        "the tuned model over this many chunks (every chunk of the probes' documents, then a "
        "seeded sample), side by side in metrics.json; 0: no comparison.")
    seed: int = Field(0, description="Seed of every sample and of k-means.")


# The search modes and fusions, spelled once: the config, the query side and the CLI use these.
SearchMode = Literal["dense", "lexical", "hybrid"]
Fusion = Literal["auto", "rrf", "convex"]
ScoreNorm = Literal["minmax", "zscore"]
SEARCH_MODES: tuple[str, ...] = get_args(SearchMode)
FUSIONS: tuple[str, ...] = get_args(Fusion)
SCORE_NORMS: tuple[str, ...] = get_args(ScoreNorm)


class SearchConfig(_Config):
    """How queries are answered: dense, lexical (BM25) or both fused (rank or score fusion)."""

    mode: SearchMode = Field(
        "hybrid", description="dense (FAISS), lexical (BM25) or hybrid (both, fused as "
        "`fusion` says).")
    fusion: Fusion = Field(
        "auto", description="hybrid: auto (chosen at index build on label-free probes of the "
        "corpus: rrf or convex at one of `alphas`, or one side alone where it beats them by "
        "`fusion_margin`), rrf (reciprocal rank) or convex (alpha x dense + (1 - alpha) x "
        "lexical, scores normalised per query).")
    alpha: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.5, description="fusion convex: the dense side's weight (1: dense alone).")
    alphas: tuple[Annotated[float, Field(gt=0.0, lt=1.0)], ...] = Field(
        (0.3, 0.5, 0.7, 0.85), min_length=1,
        description="fusion auto: the convex weights tried on the probes.")
    normalization: ScoreNorm = Field(
        "zscore", description="How each side's candidate scores are put on one scale before "
        "convex fusion: zscore (mean 0, sd 1) or minmax (0..1); docs/search-quality.md "
        "compares them.")
    query_weighting: bool = Field(
        True, description="Move each query's fusion weight by its own evidence (identifier "
        "tokens, rare terms, a standout BM25 top hit: more lexical; a plain-words question: "
        "more dense).")
    probes: Annotated[int, Field(ge=20, le=5000)] = Field(
        200, description="fusion auto: label-free probe queries scored at index build.")
    fusion_margin: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.01, description="fusion auto: one side alone is used only when its probe nDCG@10 "
        "beats the best fusion's by this much; else the fusion is.")
    labels_choose: bool = Field(
        True, description="fusion auto: with 20+ BEIR labelled queries beside the corpus, "
        "choose on them instead of probes (labels outrank probes); false keeps them for "
        "the evaluation alone (a test set nothing is chosen on).")
    rrf_k: Annotated[int, Field(ge=1)] = Field(
        60, description="Reciprocal rank fusion constant: score = weight / (rrf_k + rank).")
    dense_weight: Annotated[float, Field(ge=0.0)] = Field(
        1.0, description="Weight of the dense ranking in rrf fusion.")
    lexical_weight: Annotated[float, Field(ge=0.0)] = Field(
        1.0, description="Weight of the BM25 ranking in rrf fusion.")
    candidates: Annotated[int, Field(ge=1, le=10_000)] = Field(
        100, description="Top hits taken from each side before fusion.")
    expand_duplicates: Literal["group", "rows", "off"] = Field(
        "group", description="A hit's deduplicated twins: listed with it (group), as rows "
        "after it (rows), or not at all (off).")
    stopwords: Literal["en", "none"] = Field(
        "en", description="Stopwords left out of the lexical index (identifiers are kept).")
    stemmer: Literal["english", "none"] = Field(
        "english", description="Snowball stemming of plain words in the lexical index.")
    bm25_k1: Annotated[float, Field(gt=0.0)] = Field(
        1.5, description="BM25 term-frequency saturation.")
    bm25_b: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.75, description="BM25 length normalisation (0: none, 1: full).")


class PublishConfig(_Config):
    """Where an index that passed the gate is published (versions + a CURRENT pointer)."""

    target: str = Field(
        "published", description="Folder or s3://bucket/prefix that receives published indexes."
    )
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint, if any.")
    s3_region: str | None = Field(None, description="S3 region; null: boto3's default chain.")
    keep: Annotated[int, Field(ge=1)] = Field(5, description="Published versions kept.")


class LanceDBTarget(_Config):
    """A LanceDB table the export keeps in step with the index (embedded, no server)."""

    uri: str | None = Field(None, description="A folder (relative to the workspace) or "
                            "s3://bucket/prefix; null: no LanceDB export.")
    table: str = Field("embedpipe_chunks", description="Table name inside the database.")


class PostgresTarget(_Config):
    """A PostgreSQL table with pgvector the export keeps in step with the index."""

    dsn_env: str | None = Field(
        None, description="Name of the environment variable holding the connection string "
        "(never the string itself: it may carry a password); null: no PostgreSQL export.")
    table: str = Field("embedpipe_chunks", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$",
                       description="Table name (created when missing; letters, digits, _).")
    index: Literal["hnsw", "ivfflat", "none"] = Field(
        "hnsw", description="pgvector index on the vector column (inner product).")
    hnsw_m: Annotated[int, Field(ge=2, le=100)] = Field(16, description="HNSW links per node.")
    hnsw_ef_construction: Annotated[int, Field(ge=4, le=1000)] = Field(
        64, description="HNSW build-time candidate list.")
    ivfflat_lists: Annotated[int, Field(ge=1)] | None = Field(
        None, description="IVFFlat lists; null: rows / 1000, at least 1 (pgvector's advice).")
    connect_timeout_s: Annotated[int, Field(ge=1, le=600)] = Field(
        10, description="Seconds to wait for the server before the export fails.")


class ExportConfig(_Config):
    """Stores users keep vectors in, kept in step with each gated index: only rows that
    changed are written, deleted chunks removed, all in one transaction or table version."""

    lancedb: LanceDBTarget = Field(LanceDBTarget(), description="An embedded LanceDB table "
                                   "(a folder or s3://); off while its uri is null.")
    postgres: PostgresTarget = Field(PostgresTarget(), description="A PostgreSQL table with "
                                     "pgvector; off while its dsn_env is null.")


class Params(_Config):
    """Everything in params.yaml."""

    paths: PathsConfig = PathsConfig()
    run: RunConfig = RunConfig()
    ingest: IngestConfig = IngestConfig()
    clean: CleanConfig = CleanConfig()
    chunk: ChunkConfig = ChunkConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    encode: EncodeConfig = EncodeConfig()
    reduce: ReduceConfig = ReduceConfig()
    dedup: DedupConfig = DedupConfig()
    index: IndexConfig = IndexConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    publish: PublishConfig = PublishConfig()
    export: ExportConfig = ExportConfig()
    search: SearchConfig = SearchConfig()


def allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the group at `loc` (a key path below Params) accepts."""
    model: Any = Params
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None or not isinstance(field.annotation, type):
            return []
        model = field.annotation
    return list(getattr(model, "model_fields", {}))


def _without_userinfo(value: Any) -> str:
    """`repr(value)` with any `user:password@` of a URL in it masked (never echo a secret)."""
    return re.sub(r"(//)[^/@\s'\"]+@", r"\1***@", repr(value))


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem: `source: key.path: message (got value)`; an unknown key also
    lists the keys its group accepts."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        got = "" if e["type"] == "missing" else f" (got {_without_userinfo(e.get('input'))})"
        if e["type"] == "extra_forbidden":
            got += f"; allowed here: {', '.join(allowed_keys(tuple(e['loc'][:-1])))}"
        lines.append(f"{source}: {loc}: {e['msg']}{got}")
    return "\n".join(lines)


def parse_params(raw: dict[str, Any], source: str = "params") -> Params:
    """Validate a params mapping; raise ValueError naming every bad key path."""
    try:
        return Params.model_validate(raw or {})
    except ValidationError as err:
        raise ValueError(format_validation_error(err, source)) from None


def parse_override(item: str) -> tuple[str, Any]:
    """`'reduce.pca_dims=64'` -> `('reduce.pca_dims', 64)`; the value is parsed as YAML."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {item!r}: expected KEY=VALUE, e.g. reduce.pca_dims=64")
    return key.strip(), yaml.safe_load(value) if value.strip() else None


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of `raw` with dotted-key overrides applied (input untouched)."""
    out = copy.deepcopy(raw or {})
    for dotted, value in overrides.items():
        node = out
        *parents, leaf = dotted.split(".")
        for p in parents:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {dotted!r}: {p!r} is not a group of keys")
            node = child
        node[leaf] = value
    return out


def read_params_file(path: Path) -> dict[str, Any]:
    """The raw YAML mapping of a params file (the one place YAML is read)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: params file not found") from None
    try:
        try:
            raw = yaml.load(text, Loader=_SAFE_LOADER)
        except yaml.YAMLError:  # worded by the Python parser, which names the character
            raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(str(getattr(err, "problem", None) or err).split())
        raise ValueError(f"{path}: not valid YAML{where}: {what}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of stage groups, got {type(raw).__name__}")
    return raw


def load_params(
    path: Path | str = "params.yaml", overrides: dict[str, Any] | None = None
) -> Params:
    """Read, override and validate params.yaml."""
    path = Path(path)
    raw = apply_overrides(read_params_file(path), overrides or {})
    return parse_params(raw, str(path))
