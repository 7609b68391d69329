"""chunk: cleaned `docs.parquet` -> `chunks.parquet`, passages the encoder sees whole (spans
from `tasks.documents.spans`, contexts from `tasks.documents.context`).

Schema out: chunk_id, doc_id, chunk_index, source, title, text, char_start, char_end, n_tokens,
context. Invariant: `text == doc.text[char_start:char_end]`; n_tokens (the encoder tokenizer's
count, special tokens and prefix excluded) never exceeds the budget, which leaves room in
max_seq_length for the context (`chunk.context_tokens`), encoded before the text.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from tasks.core.catalog import CHUNKS, CLEAN_DOCS
from tasks.core.config import ChunkConfig, EncodeConfig
from tasks.core.progress import task_logger
from tasks.core.result_cache import document_key
from tasks.core.runtime import StageRun, main, stage_task, start_stage
from tasks.documents.context import ContextFitter, chunk_contexts, text_budget
from tasks.documents.spans import chunk_text
from tasks.documents.token_counts import Tokens
from tasks.encoders.model import (
    check_chunk_fits,
    load_tokenizer,
    passage_room,
    tokenizer_identity,
)


def document_spans(docs: pa.Table, cfg: ChunkConfig, budget: int, tokenizer: Any
                   ) -> list[list[list[Any]]]:
    """Each document's chunks as [char_start, char_end, n_tokens, context], in order: what
    the result cache keeps per document. A span the encoder's tokenizer reads as nothing
    (control or zero-width characters only) is not a chunk."""
    tokens = Tokens(tokenizer)
    fitter = ContextFitter(tokens, cfg.context_tokens)
    out = []
    docs_in = docs.select(["format", "title", "text"]).to_pylist()
    for d, enc in zip(docs_in, tokens.read([d["text"] for d in docs_in]), strict=True):
        tokens.use(d["text"], enc)
        spans = chunk_text(d["text"], d["format"], cfg, budget, tokens)
        counts = tokens.span_counts(spans)
        kept = [(span, n) for span, n in zip(spans, counts, strict=True) if n > 0]
        contexts = chunk_contexts(d, [span for span, _ in kept], cfg, fitter)
        out.append([[a, b, n, c] for ((a, b), n), c in zip(kept, contexts, strict=True)])
    return out


def chunk_rows(docs: pa.Table, spans: list[list[list[Any]]]) -> pa.Table:
    """The chunks table of documents and their `document_spans`, in document order."""
    rows = []
    docs_in = docs.select(["doc_id", "source", "title", "text"]).to_pylist()
    for d, doc_spans in zip(docs_in, spans, strict=True):
        for i, (a, b, n, context) in enumerate(doc_spans):
            rows.append({"chunk_id": f"{d['doc_id']}:{i:04d}", "doc_id": d["doc_id"],
                         "chunk_index": i, "source": d["source"], "title": d["title"],
                         "text": d["text"][a:b], "char_start": a, "char_end": b,
                         "n_tokens": n, "context": context})
    return pa.Table.from_pylist(rows, schema=CHUNKS.schema())


def chunk_documents(docs: pa.Table, cfg: ChunkConfig, budget: int, tokenizer: Any) -> pa.Table:
    """All chunks of all documents, in document order, with their context."""
    return chunk_rows(docs, document_spans(docs, cfg, budget, tokenizer))


def document_keys(docs: pa.Table) -> list[str]:
    """Each document's result-cache key: what `document_spans` reads of it (the title
    for the context)."""
    return [document_key(f, ti, t) for f, ti, t in zip(
        docs.column("format").to_pylist(), docs.column("title").to_pylist(),
        docs.column("text").to_pylist(), strict=True)]


def chunk_shard(docs: pa.Table, cfg: ChunkConfig, budget: int, enc: EncodeConfig
                ) -> list[list[list[Any]]]:
    """`document_spans` with the encoder's tokenizer, loaded once per process (on a Dask
    worker as in the driver); nothing is loaded for a shard the cache answered whole."""
    if not docs.num_rows:
        return []
    return document_spans(docs, cfg, budget, load_tokenizer(enc.model, enc.revision))


def chunk_fingerprint(run: StageRun, budget: int) -> tuple[str, dict[str, Any]]:
    """The stage fingerprint (declared params, the tokenizer's files, the budget) and the
    model facts."""
    model = tokenizer_identity(run.params.encode)  # not the runtime: no server is asked here
    return run.fingerprint(tokenizer_sha256=model["files_sha256"], budget=budget), model


@stage_task("chunk")
def chunk_task(root: str = ".") -> str:
    """Cut the cleaned documents into chunks within the encoder's token budget, shard by
    shard (`io.BATCH_ROWS` documents at a time, or `run.dask.shard_rows` on Dask); a
    document whose spans the result cache holds (same text, title, params, tokenizer and
    code) is not cut again."""
    run = start_stage("chunk", root)
    cfg, enc = run.params.chunk, run.params.encode
    check_chunk_fits(enc, cfg.max_tokens)
    budget = text_budget(cfg, passage_room(enc)[0])
    fp, model = chunk_fingerprint(run, budget)
    changes = run.changes(CHUNKS, "chunk_id", "text")
    cache = run.result_cache(**run.facts)
    n_docs = 0
    with run.output(fp, cfg) as out:
        writer = out.open_table(CHUNKS)
        for docs, spans in run.map_cached(chunk_shard, CLEAN_DOCS, document_keys, cache, cfg,
                                          budget, enc, unit="documents"):
            chunks = chunk_rows(docs, spans)
            writer.write(chunks)
            changes.update(chunks)
            n_docs += docs.num_rows
        out.record(budget=budget, tokenizer=model["name"], changes=changes.counts(),
                   rows={"docs": n_docs, "chunks": writer.num_rows}, reuse=cache.close(),
                   cache_dropped=cache.dropped)
    task_logger().info("chunk: %d documents -> %d chunks (budget %d tokens) in %.1f s",
                       n_docs, writer.num_rows, budget, run.seconds)
    return str(run.out_dir)


if __name__ == "__main__":
    main(chunk_task)
