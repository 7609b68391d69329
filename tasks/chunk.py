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
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.core.catalog import CHUNKS, CLEAN_DOCS
from tasks.core.config import ChunkConfig, EncodeConfig
from tasks.core.progress import task_logger
from tasks.core.runtime import StageRun, main, start_stage
from tasks.documents.context import ContextFitter, chunk_contexts, text_budget
from tasks.documents.spans import chunk_text
from tasks.documents.token_counts import Tokens
from tasks.encoders.model import (
    check_chunk_fits,
    load_tokenizer,
    passage_room,
    tokenizer_identity,
)


def chunk_documents(docs: pa.Table, cfg: ChunkConfig, budget: int, tokenizer: Any) -> pa.Table:
    """All chunks of all documents, in document order, with their context. A span the
    encoder's tokenizer reads as nothing (control or zero-width characters only) is not a
    chunk."""
    tokens = Tokens(tokenizer)
    fitter = ContextFitter(tokens, cfg.context_tokens)
    rows = []
    docs_in = docs.select(["doc_id", "source", "format", "title", "text"]).to_pylist()
    for d, enc in zip(docs_in, tokens.read([d["text"] for d in docs_in]), strict=True):
        tokens.use(d["text"], enc)
        spans = chunk_text(d["text"], d["format"], cfg, budget, tokens)
        counts = tokens.span_counts(spans)
        kept = [(span, n) for span, n in zip(spans, counts, strict=True) if n > 0]
        contexts = chunk_contexts(d, [span for span, _ in kept], cfg, fitter)
        for i, (((a, b), n), context) in enumerate(zip(kept, contexts, strict=True)):
            rows.append({"chunk_id": f"{d['doc_id']}:{i:04d}", "doc_id": d["doc_id"],
                         "chunk_index": i, "source": d["source"], "title": d["title"],
                         "text": d["text"][a:b], "char_start": a, "char_end": b,
                         "n_tokens": n, "context": context})
    return pa.Table.from_pylist(rows, schema=CHUNKS.schema())


def chunk_shard(docs: pa.Table, cfg: ChunkConfig, budget: int, enc: EncodeConfig
                ) -> tuple[int, pa.Table]:
    """(documents in, their chunks) with the encoder's tokenizer, loaded once per process
    (on a Dask worker as in the driver)."""
    return docs.num_rows, chunk_documents(docs, cfg, budget, load_tokenizer(enc.model,
                                                                            enc.revision))


def chunk_fingerprint(run: StageRun, budget: int) -> tuple[str, dict[str, Any]]:
    """The stage fingerprint (declared params, the tokenizer's files, the budget) and the
    model facts."""
    model = tokenizer_identity(run.params.encode)  # not the runtime: no server is asked here
    return run.fingerprint(tokenizer_sha256=model["files_sha256"], budget=budget), model


@task(name="chunk", cache_policy=NO_CACHE)
def chunk_task(root: str = ".") -> str:
    """Cut the cleaned documents into chunks within the encoder's token budget, shard by
    shard (`io.BATCH_ROWS` documents at a time, or `run.dask.shard_rows` on Dask)."""
    run = start_stage("chunk", root)
    cfg, enc = run.params.chunk, run.params.encode
    check_chunk_fits(enc, cfg.max_tokens)
    budget = text_budget(cfg, passage_room(enc)[0])
    fp, model = chunk_fingerprint(run, budget)
    changes = run.changes(CHUNKS, "chunk_id", "text")
    n_docs = 0
    with run.output(fp, cfg) as out:
        writer = out.open_table(CHUNKS)
        for n, chunks in run.map_shards(chunk_shard, CLEAN_DOCS, cfg, budget, enc,
                                            unit="documents"):
            writer.write(chunks)
            changes.update(chunks)
            n_docs += n
        out.record(budget=budget, tokenizer=model["name"], changes=changes.counts(),
                   rows={"docs": n_docs, "chunks": writer.num_rows})
    task_logger().info("chunk: %d documents -> %d chunks (budget %d tokens) in %.1f s",
                       n_docs, writer.num_rows, budget, run.seconds)
    return str(run.out_dir)


if __name__ == "__main__":
    main(chunk_task)
