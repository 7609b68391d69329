"""The query-side texts the stages after encode embed, known before dedup: embedded ahead.

The index stage embeds the nprobe tuning's probes (on an IVF or HNSW index) and the search
choice's texts: the labelled queries where BEIR labels choose, else the label-free probes and
their target chunks with the probe text taken out; evaluate embeds its probes and every
labelled set. All of them are drawn from the chunk stage's table and the labels beside the
corpus with the seeds the params give, so the encode stage, which has the model loaded,
embeds them into the vector cache and those stages read them there
(`search.encode_texts`) instead of loading the model again. A text they need that is not
there (params changed since, more probes needed than drawn ahead) is embedded where it is
needed, as before: ahead is a saving, never a source of truth. The search choice's probes
themselves are kept there too (tasks/query/probe_store.py). `embed_ahead` runs in the encode
stage; `embedpipe cache gc` keeps their vectors (`ahead_keys`).
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tasks.core.catalog import CHUNKS
from tasks.core.config import EncodeConfig, Params
from tasks.core.progress import task_logger
from tasks.core.runtime import StageRun, start_stage
from tasks.core.vectors import vector_problem
from tasks.encoders import vector_cache
from tasks.encoders.loading import encoder_for
from tasks.encoders.model import prefixes
from tasks.encoders.tuned import chosen_space
from tasks.encoders.vector_cache import text_keys
from tasks.evaluation.beir import pooled_labels
from tasks.evaluation.build_choice import labels_that_choose
from tasks.indexing.factory import resolve_factory
from tasks.query.probe_drawing import AHEAD_PER_PROBE, DRAWN, Probe, drawing, probe_texts
from tasks.query.probe_store import keep_probes, probes_key
from tasks.query.probes import probe_queries
from tasks.storage.s3 import is_s3


def texts_ahead(chunks: pa.Table, params: Params, root: Path, d: int
                ) -> tuple[list[str], list[str], list[tuple[Probe, dict[str, Any]]]]:
    """(queries, passages) the index and evaluate stages will embed, each once, in order,
    and the search choice's probes they come from, each with the state to draw on after it
    (`probe_drawing.drawing`; none where labels or the params choose).

    Args:
        chunks: the chunk stage's table (`probe_drawing.DRAWN` columns), every chunk.
        params: the run's params (their seeds and counts decide the texts).
        root: the workspace (a local ingest source's labels lie under it).
        d: the vectors' dimension after reduce (whether the index will be tuned).
    """
    source = params.ingest.source
    labels = {} if is_s3(source) else pooled_labels(root / source)[0]
    drawn: list[tuple[Probe, dict[str, Any]]] = []
    if params.search.mode == "hybrid" and params.search.fusion == "auto" and \
            labels_that_choose(params, root) is None:
        drawn = list(islice(drawing(chunks, params.index.seed),
                            AHEAD_PER_PROBE * params.search.probes))
    queries, passages = probe_texts([p for p, _ in drawn])
    queries += list(labels.values())
    if _tuned(params, chunks.num_rows, d):
        queries += [q for q, _ in probe_queries(chunks, params.index.tune_queries,
                                                params.index.seed)]
    queries += [q for q, _ in probe_queries(chunks, params.evaluate.probe_docs,
                                            params.evaluate.seed)]
    return list(dict.fromkeys(queries)), list(dict.fromkeys(passages)), drawn


def _tuned(params: Params, n: int, d: int) -> bool:
    """Whether the index over (at most) `n` vectors tunes its search parameter on probes."""
    if params.index.nprobe != "auto":
        return False
    try:
        factory, nlist = resolve_factory(params.index, n, d)
    except ValueError:  # the index stage names the problem
        return False
    return nlist is not None or "HNSW" in factory


def ahead_texts(run: StageRun, cfg: EncodeConfig, d: int
                ) -> tuple[list[tuple[str, list[str]]], list[tuple[Probe, dict[str, Any]]]]:
    """(prefix, texts) of the query-side texts the index and evaluate stages will embed
    (`ahead.texts_ahead`): the queries with the query prefix, the passages with the
    passage one; and the search choice's probes drawn."""
    queries, passages, drawn = texts_ahead(run.read(CHUNKS, list(DRAWN)), run.params,
                                           run.root, run.params.reduce.pca_dims or d)
    return [(prefixes(cfg)[1], queries), (prefixes(cfg)[0], passages)], drawn


def ahead_keys(root: Path) -> set[str]:
    """The vector-cache keys of what encode embeds ahead for the workspace's current chunks
    and params (`embed_ahead`): `embedpipe cache gc` keeps them."""
    run = start_stage("encode", root)
    cfg, model_info, _ = chosen_space(run.params.encode, run.input_dirs["finetune"])
    try:
        sides, _ = ahead_texts(run, cfg, model_info["dim"])
    except ValueError:  # nothing embedded ahead (`embed_ahead` said why)
        return set()
    return {k for prefix, texts in sides for k in text_keys(texts, prefix)}


def embed_ahead(run: StageRun, cfg: EncodeConfig, cache: Path, space: str, d: int) -> int:
    """Embed into the vector cache, while the model is loaded, the query-side texts the
    index and evaluate stages will embed (`ahead_texts`), as their query side embeds them
    (`search.encode_texts`), and keeps the search choice's probes drawn
    (`probe_store.keep_probes`); how many texts the cache lacked."""
    try:
        sides, drawn = ahead_texts(run, cfg, d)
    except ValueError as err:  # a labels file, say: the stage that reads it names it again
        task_logger().warning("encode: nothing embedded ahead for index and evaluate (%s)",
                              err)
        return 0
    if drawn:  # fewer than asked: all there are
        keep_probes(cache, probes_key(run.inputs["chunk"], run.params.index.seed),
                    [p for p, _ in drawn], drawn[-1][1] if len(drawn) == AHEAD_PER_PROBE *
                    run.params.search.probes else None)
    new = 0
    for prefix, texts in sides:
        found, _ = vector_cache.lookup(cache, space, text_keys(texts, prefix), d)
        missing = [t for t, hit in zip(texts, found, strict=True) if not hit]
        if missing:
            task_logger().info("encode: %d query-side texts for index and evaluate, embedded "
                               "ahead", len(missing))
            x = np.asarray(encoder_for(cfg).encode(
                [prefix + t for t in missing], normalize_embeddings=cfg.normalize,
                convert_to_numpy=True, show_progress_bar=False), dtype="float32")
            if vector_problem(x, cfg.normalize) is None:  # else the later stage embeds them
                vector_cache.append(cache, space, text_keys(missing, prefix), x)
                new += len(missing)
    return new
