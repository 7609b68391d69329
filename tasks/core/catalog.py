"""Every file a stage writes: its stage, its name and, for Parquet tables, its columns.

Stages read and write through these entries, never through file-name literals. A table whose
last column is a vector has `vectors=True`: its width (the embedding dimension) is known only
at run time, so `schema(d)` adds it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

MANIFEST = "_manifest.json"
VECTOR_COLUMN = "vector"
METRICS_FILE = "metrics.json"  # the workspace-level copy `dvc metrics show` reads
# JSON keys of a stage's files that report on one build (this machine's timings, the date,
# the checkout's commit, why the index was rebuilt rather than updated): never used to decide
# anything, and left out when two builds' outputs are compared for identity.
REPORTED_KEYS = frozenset({
    "exact_ms_per_query", "lexical_seconds", "ms_per_query", "index_ms_per_query",
    "step_seconds", "created_utc", "code", "probe_seconds", "update_reason",
})
# Under paths.data: ingest's listing of ingest.source, the file DVC hashes in its place
SOURCE_LISTING = "source-listing.jsonl"


@dataclass(frozen=True)
class StageFile:
    """One file of one stage's output folder."""

    stage: str
    name: str
    fields: tuple[tuple[str, pa.DataType], ...] = ()
    vectors: bool = False

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.fields) + ((VECTOR_COLUMN,) if self.vectors else ())

    def schema(self, d: int | None = None) -> pa.Schema:
        """The table's Arrow schema; `d` is the vector width of a vector table."""
        if self.vectors and d is None:
            raise ValueError(f"{self.stage}/{self.name}: a vector table needs its dimension")
        fields = list(self.fields)
        if self.vectors:
            fields.append((VECTOR_COLUMN, pa.list_(pa.float32(), d)))
        return pa.schema(fields)


_S, _I32, _I64, _F32 = pa.string(), pa.int32(), pa.int64(), pa.float32()
_CHUNK_TEXT = (("chunk_id", _S), ("doc_id", _S), ("source", _S), ("title", _S), ("text", _S),
               ("context", _S))

INGEST_DOCS = StageFile("ingest", "docs.parquet", (
    ("doc_id", _S), ("source", _S), ("record_key", _S), ("format", _S), ("title", _S),
    ("text", _S), ("sha256", _S), ("size_bytes", _I64), ("metadata", _S)))
INGEST_REJECTS = StageFile("ingest", "rejects.parquet", (
    ("source", _S), ("record_key", _S), ("reason", _S)))
CLEAN_DOCS = StageFile("clean", "docs.parquet", (
    ("doc_id", _S), ("source", _S), ("format", _S), ("title", _S), ("text", _S),
    ("metadata", _S)))
CLEAN_REJECTS = StageFile("clean", "rejects.parquet", (
    ("doc_id", _S), ("source", _S), ("reason", _S)))
CHUNKS = StageFile("chunk", "chunks.parquet", (
    ("chunk_id", _S), ("doc_id", _S), ("chunk_index", _I32), ("source", _S), ("title", _S),
    ("text", _S), ("char_start", _I64), ("char_end", _I64), ("n_tokens", _I32),
    ("context", _S)))
# finetune: which model encode uses (base or tuned, and why), the training card, the pairs
# trained on; a tuned model is a sentence-transformers folder `model-<files digest>`.
FINETUNE_CHOICE = StageFile("finetune", "model.json")
FINETUNE_CARD = StageFile("finetune", "card.json")
FINETUNE_PAIRS = StageFile("finetune", "pairs.parquet", (
    ("anchor", _S), ("positive", _S), ("kind", _S), ("doc_id", _S), ("chunk_id", _S),
    ("negative", _S)))
# the chunk texts (sha256) the last training saw: the churn since is measured against them
FINETUNE_TRAINED = StageFile("finetune", "trained_chunks.parquet", (("text_key", _S),))
TUNED_MODEL_PREFIX = "model-"
ENCODED = StageFile("encode", "vectors.parquet", (("chunk_id", _S), ("text_key", _S)),
                    vectors=True)
REDUCED = StageFile("reduce", "vectors.parquet", (("chunk_id", _S),), vectors=True)
TRANSFORM = StageFile("reduce", "transform.npz")
KEPT = StageFile("dedup", "vectors.parquet", _CHUNK_TEXT, vectors=True)
# kept_chunk_id: the twin it was found against; group_chunk_id: the kept chunk that stands for
# its whole duplicate group in the index (the same, unless that twin was dropped in turn).
DROPPED = StageFile("dedup", "dropped.parquet", (
    ("dropped_chunk_id", _S), ("kept_chunk_id", _S), ("similarity", _F32), ("kind", _S),
    ("doc_id", _S), ("source", _S), ("group_chunk_id", _S), ("text", _S), ("context", _S)))
INDEX = StageFile("index", "index.faiss")
# An index too large for memory keeps its inverted lists here, beside index.faiss, which names
# it by base name; readers memory-map it (tasks.indexing.ondisk.read_index_file).
INDEX_IVFDATA = StageFile("index", "index.ivfdata")
INDEX_CHUNKS = StageFile("index", "chunks.parquet", (*_CHUNK_TEXT, ("int_id", _I64),
                                                    ("vector_sha256", _S)))
INDEX_TRANSFORM = StageFile("index", TRANSFORM.name)
INDEX_MODEL = StageFile("index", "model.json")
INDEX_CARD = StageFile("index", "card.json")
INDEX_METADATA = StageFile("index", "metadata.json")
INDEX_SEARCH = StageFile("index", "search.json")  # the search settings the folder answers with
INDEX_MEMBERS = StageFile("index", "members.parquet", (
    ("group_chunk_id", _S), ("chunk_id", _S), ("doc_id", _S), ("source", _S),
    ("similarity", _F32), ("kind", _S)))
INDEX_DOCS = StageFile("index", "docs.parquet", (
    ("doc_id", _S), ("source", _S), ("title", _S), ("n_chunks", _I32)), vectors=True)
INDEX_DOC_INDEX = StageFile("index", "docs.faiss")  # exact search over INDEX_DOCS' vectors
# The lexical (BM25) index is a set of flat `lexical.*` files (tasks.query.lexical).
METRICS = StageFile("evaluate", METRICS_FILE)
PROBE_QUERIES = StageFile("evaluate", "queries.parquet", (("query", _S), ("doc_id", _S)))
PLOTS_DIR = "plots"
PLOTS = tuple(StageFile("evaluate", f"{PLOTS_DIR}/{name}") for name in (
    "map.png", "recall_vs_nprobe.png", "nn_similarity.png"))
RECEIPT = StageFile("publish", "receipt.json")
EXPORTED = StageFile("export", "exported.json")  # per target: where, table version, counts
