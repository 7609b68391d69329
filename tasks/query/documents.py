"""Document vectors: the article's hierarchical approach, one vector per document.

A document's vector is the normalised mean of its chunks' vectors (`index.doc_vectors: mean`),
or their mean weighted by token count (`token_mean`). Every chunk of the document counts: a
chunk that dedup dropped counts with the vector of the kept chunk standing for its group, so
deduplication never changes a document's vector. The vectors are written beside the chunk
index as `docs.parquet` and searched exactly (`docs.faiss`, inner product on unit vectors):
`embedpipe search --level doc` returns documents.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.core.catalog import CHUNKS, INDEX_DOC_INDEX, INDEX_DOCS, VECTOR_COLUMN
from tasks.core.io import StageOutput
from tasks.core.runtime import StageRun
from tasks.core.vectors import vectors_to_arrow
from tasks.encoders.loading import release_local_encoders
from tasks.query.search import IndexFolder

BLOCK_ROWS = 8192  # chunk vectors summed at a time: float64 temporaries of a block, not of n


def document_vectors(kept: pa.Table, x: np.ndarray, dropped: pa.Table,
                     tokens: dict[str, int] | None = None) -> tuple[pa.Table, np.ndarray]:
    """(doc_id, source, title, n_chunks) per document, sorted by doc_id, and its unit vector.

    Args:
        kept: the index's chunk rows (chunk_id, doc_id, source, title), aligned with `x`.
        x: (n, d) vectors of the kept chunks.
        dropped: dedup's dropped rows (dropped_chunk_id, doc_id, source, group_chunk_id).
        tokens: chunk_id -> token count, to weight each chunk by it (None: equal weights).
    """
    row_of = {c: i for i, c in enumerate(kept.column("chunk_id").to_pylist())}
    chunk_ids = kept.column("chunk_id").to_pylist() + dropped.column(
        "dropped_chunk_id").to_pylist()
    rows = np.array(list(range(kept.num_rows)) + [row_of[g] for g in dropped.column(
        "group_chunk_id").to_pylist()], dtype="int64")
    doc_ids = kept.column("doc_id").to_pylist() + dropped.column("doc_id").to_pylist()
    weights = np.array([tokens[c] if tokens is not None else 1 for c in chunk_ids],
                       dtype="float64")
    docs, which = np.unique(np.array(doc_ids, dtype=object), return_inverse=True)
    sums = np.zeros((len(docs), x.shape[1]), dtype="float64")
    for at in range(0, len(rows), BLOCK_ROWS):  # in row order: the same sums, bit for bit
        part = slice(at, at + BLOCK_ROWS)
        np.add.at(sums, which[part], x[rows[part]].astype("float64") * weights[part, None])
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    vectors = (sums / np.where(norms > 0, norms, 1.0)).astype("float32")
    first = {}
    sources = kept.column("source").to_pylist() + dropped.column("source").to_pylist()
    titles = kept.column("title").to_pylist() + [None] * dropped.num_rows
    for doc, source, title in zip(doc_ids, sources, titles, strict=True):
        if doc not in first or (first[doc][1] is None and title is not None):
            first[doc] = (source, title)
    table = pa.table({
        "doc_id": pa.array(docs.tolist(), pa.string()),
        "source": pa.array([first[d][0] for d in docs], pa.string()),
        "title": pa.array([first[d][1] for d in docs], pa.string()),
        "n_chunks": pa.array(np.bincount(which, minlength=len(docs)), pa.int32())})
    return table, vectors


def search_documents(folder: IndexFolder, queries: list[str], k: int = 5
                     ) -> list[list[dict[str, Any]]]:
    """Top-k documents (doc_id, source, title, n_chunks, score) for each query, by exact inner
    product between the query (embedded as the chunk index embeds queries) and document
    vectors."""
    path = folder.path / INDEX_DOC_INDEX.name
    if not path.is_file():
        raise ValueError(f"{folder.path}: no document vectors here (index.doc_vectors: none, "
                         "or an index built before them); set index.doc_vectors: mean and run")
    index = faiss.read_index(str(path))
    docs = pq.read_table(folder.path / INDEX_DOCS.name,
                         columns=[name for name, _ in INDEX_DOCS.fields])
    scores, rows = index.search(folder.encode_queries(queries), min(k, index.ntotal))
    out = []
    for srow, rrow in zip(scores.tolist(), rows.tolist(), strict=True):
        hits = docs.take(pa.array([r for r in rrow if r >= 0], pa.int64())).to_pylist()
        out.append([{**hit, "score": s} for hit, s in zip(hits, srow, strict=False)])
    return out


def write_document_index(out: StageOutput, rows: tuple[pa.Table, np.ndarray, pa.Table],
                         run: StageRun, how: str) -> int:
    """Document vectors (`document_vectors`) from the index stage's kept rows, their vectors and
    dedup's dropped rows, and their exact index, beside the chunk index; returns how many
    documents (0 with `index.doc_vectors: none`).

    Called once the queries are embedded: what the encoder holds between calls, and what
    the stage freed, are handed back before the float64 sums are taken."""
    table, x, dropped = rows
    release_local_encoders()
    if how == "none":
        return 0
    tokens = None
    if how == "token_mean":
        counts = run.read(CHUNKS, ["chunk_id", "n_tokens"])
        tokens = dict(zip(counts.column("chunk_id").to_pylist(),
                          counts.column("n_tokens").to_pylist(), strict=True))
    docs, xd = document_vectors(table, x, dropped, tokens)
    out.write_table(INDEX_DOCS, docs.append_column(VECTOR_COLUMN, vectors_to_arrow(xd)))
    index = faiss.IndexFlatIP(xd.shape[1])
    index.add(xd)
    faiss.write_index(index, str(out.path(INDEX_DOC_INDEX)))
    return docs.num_rows
