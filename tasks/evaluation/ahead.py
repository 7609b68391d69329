"""The query-side texts the stages after encode embed, known before dedup: embedded ahead.

The index stage embeds the nprobe tuning's probes (on an IVF or HNSW index) and the search
choice's texts: the labelled queries where BEIR labels choose, else the label-free probes and
their target chunks with the probe text taken out; evaluate embeds its probes and every
labelled set. All of them are drawn from the chunk stage's table and the labels beside the
corpus with the seeds the params give, so the encode stage, which has the model loaded,
embeds them into the vector cache and those stages read them there
(`search.encode_texts`) instead of loading the model again. A text they need that is not
there (params changed since, a probe dedup made unusable) is embedded where it is needed,
as before: ahead is a saving, never a source of truth.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from tasks.core.config import Params
from tasks.evaluation.beir import pooled_labels
from tasks.evaluation.retrieval import MIN_LABELS
from tasks.indexing.factory import resolve_factory
from tasks.query.probe_drawing import AHEAD_PER_PROBE, probe_texts
from tasks.query.probes import probe_queries
from tasks.storage.s3 import is_s3


def texts_ahead(chunks: pa.Table, params: Params, root: Path, d: int
                ) -> tuple[list[str], list[str]]:
    """(queries, passages) the index and evaluate stages will embed, each once, in order.

    Args:
        chunks: the chunk stage's table (`probe_drawing.DRAWN` columns), every chunk.
        params: the run's params (their seeds and counts decide the texts).
        root: the workspace (a local ingest source's labels lie under it).
        d: the vectors' dimension after reduce (whether the index will be tuned).
    """
    source = params.ingest.source
    labels = {} if is_s3(source) else pooled_labels(root / source)[0]
    queries, passages = list(labels.values()), []
    choosing = params.search.labels_choose and len(labels) >= MIN_LABELS
    if params.search.mode == "hybrid" and params.search.fusion == "auto" and not choosing:
        queries, passages = probe_texts(chunks, AHEAD_PER_PROBE * params.search.probes,
                                        params.index.seed)
        queries += list(labels.values())
    if _tuned(params, chunks.num_rows, d):
        queries += [q for q, _ in probe_queries(chunks, params.index.tune_queries,
                                                params.index.seed)]
    queries += [q for q, _ in probe_queries(chunks, params.evaluate.probe_docs,
                                            params.evaluate.seed)]
    return list(dict.fromkeys(queries)), list(dict.fromkeys(passages))


def _tuned(params: Params, n: int, d: int) -> bool:
    """Whether the index over (at most) `n` vectors tunes its search parameter on probes."""
    if params.index.nprobe != "auto":
        return False
    try:
        factory, nlist = resolve_factory(params.index, n, d)
    except ValueError:  # the index stage names the problem
        return False
    return nlist is not None or "HNSW" in factory
