"""evaluate: index folder + vectors + chunks -> metrics.json, plots/*.png, queries.parquet.

Measures retrieval through the same query path as `embedpipe search` (BEIR labels when the
corpus has them, a label-free probe always), index recall vs exact search per search
setting, and the health of the space; then applies the quality gate.
Invariant: metrics are written even when the gate fails; the stage then fails.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tasks.core.catalog import (
    CHUNKS,
    INGEST_DOCS,
    KEPT,
    METRICS,
    METRICS_FILE,
    PLOTS,
    PLOTS_DIR,
    PROBE_QUERIES,
)
from tasks.core.config import EvaluateConfig, Params
from tasks.core.io import write_json_atomic
from tasks.core.lineage import lineage_chain
from tasks.core.memory import release_freed_memory
from tasks.core.progress import Progress, task_logger
from tasks.core.runtime import StageRun, main, stage_task, start_stage
from tasks.core.vectors import sample_rows
from tasks.encoders.loading import release_local_encoders
from tasks.evaluation import metrics as names
from tasks.evaluation.base_vs_tuned import base_vs_tuned
from tasks.evaluation.beir import labeled_query_sets, source_labels_digest
from tasks.evaluation.health import nearest_neighbour_similarity, space_health
from tasks.evaluation.plots import plot_histogram, plot_map, plot_sweep
from tasks.evaluation.retrieval import (
    headline_variant,
    labeled_metrics,
    mode_table,
    query_set_metrics,
)
from tasks.evaluation.runs import append_run, run_record
from tasks.indexing.recall import RecallProbe, set_search_param, sweep_search_param
from tasks.query.probes import probe_queries
from tasks.query.search import IndexFolder, load_index_folder
from tasks.storage.s3 import is_s3

# The columns evaluate reads (labels; probes and the base-vs-tuned sample): the others are
# never decoded.
KEPT_READ = ["doc_id", "source"]
CHUNKS_READ = ["doc_id", "title", "text"]


def folder_labels(sources: list[str]) -> list[str]:
    """Each source's folder at the first level where the sources part ways (a corpus in one
    folder `docs/a/x.txt`, `docs/b/y.txt` is coloured by `a`, `b`); `(top)` for a file
    above that level. Files all in one folder are told apart by their extension."""
    folders = [s.split("/")[:-1] for s in sources]
    depth = 0
    while folders and all(len(f) > depth for f in folders) and len(
            {f[depth] for f in folders}) == 1:
        depth += 1
    labels = [f[depth] if len(f) > depth else "(top)" for f in folders]
    if len(set(labels)) == 1:
        return [Path(s).suffix or "(no extension)" for s in sources]
    return labels


def labels_for(table: pa.Table, rows: np.ndarray, field: str | None,
               doc_meta: dict[str, dict[str, Any]]) -> list[str] | None:
    """One label per sampled row from the source folder or a metadata key."""
    if field is None:
        return None
    docs = table.column("doc_id").take(pa.array(rows)).to_pylist()
    if field == "source_folder":
        return folder_labels(table.column("source").take(pa.array(rows)).to_pylist())
    return [str(doc_meta.get(d, {}).get(field, "(none)")) for d in docs]


def quality_gate(metrics: dict[str, Any], cfg: EvaluateConfig) -> list[str]:
    """The gate's failures, as readable lines (empty when it passes)."""
    checks = [(key, getattr(cfg, floor)) for key, floor in names.GATE]
    return [f"{key} = {metrics[key]:.4f} < {floor}" for key, floor in checks
            if floor is not None and metrics.get(key) is not None and metrics[key] < floor]


def _index_quality(folder: IndexFolder, x: np.ndarray, xq: np.ndarray,
                   cfg: EvaluateConfig) -> tuple[dict[str, Any], list[dict]]:
    probe = RecallProbe(x, xq, cfg.sample_queries, cfg.seed, k=10,
                        int_ids=folder.chunks.column("int_id").to_numpy())
    at_setting = probe.measure(folder.index)
    nlist = folder.card.get("nlist")
    _, _, sweep = sweep_search_param(folder.index, nlist, probe)
    set_search_param(folder.index, folder.card.get("search_param"), folder.card.get("search_value"))
    return {names.INDEX_RECALL_CORPUS: at_setting["recall_corpus"],
            names.INDEX_RECALL_QUERIES: at_setting.get("recall_queries"),
            names.INDEX_MS_PER_QUERY: at_setting.get("ms_per_query")}, sweep


def retrieval_quality(folder: IndexFolder, probes: list[tuple[str, str]], xq: np.ndarray,
                      params: Params, root: Path) -> dict[str, Any]:
    """Label-free probe (`probes`, embedded as `xq`) and BEIR metrics in every variant and
    per query style; the headline keys are those of the variant users get."""
    qids = [f"p{i}" for i in range(len(probes))]
    probe, buckets = query_set_metrics(
        folder, [q for q, _ in probes],
        {q: {doc: 1} for q, (_, doc) in zip(qids, probes, strict=True)}, qids, xq)
    labeled = {} if is_s3(params.ingest.source) else labeled_metrics(
        folder, root / params.ingest.source, params.evaluate.seed)
    modes, headline = mode_table(probe, labeled), headline_variant(folder)
    metrics: dict[str, Any] = {"probe_queries": len(probes), "modes": modes,
                               "search_mode": headline, "search": folder.plan.describe(),
                               "buckets": {"probe": buckets} | {
                                   rel: s["buckets"] for rel, s in labeled.items()}}
    metrics |= modes.get(headline, {})
    metrics[names.DENSE_PROBE_RECALL_AT_10] = modes.get("dense", {}).get(
        names.PROBE_RECALL_AT_10)
    if labeled:  # where the build chose the search on these labels, half were its selection
        in_sample = (folder.card.get("search_choice") or {}).get("basis") == "labels"
        metrics["labeled"] = {rel: {**s["variants"][headline], "queries": s["queries"],
                                    "choice": s["choice"], "search_chosen_on_them": in_sample}
                              for rel, s in labeled.items()}
    return metrics


def probes_of(folder: IndexFolder, chunks: pa.Table, params: Params, root: Path
              ) -> tuple[list[tuple[str, str]], dict[str, Any] | None]:
    """The label-free probes drawn from `chunks` (doc_id, title, text of every chunk) and,
    for a tuned model, the base-vs-tuned comparison on them and on the BEIR query sets
    beside the corpus under `root` (None otherwise)."""
    cfg = params.evaluate
    probes = probe_queries(chunks, cfg.probe_docs, cfg.seed)
    return probes, base_vs_tuned(
        folder.model, folder.path, params.encode, chunks, probes, cfg.tuned_compare_chunks,
        cfg.seed, {} if is_s3(params.ingest.source)
        else labeled_query_sets(root / params.ingest.source))


def evaluate_all(folder: IndexFolder, run: StageRun, doc_meta: dict[str, dict[str, Any]],
                 out_dir: Path) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Every metric of the evaluation, and the label-free probes used; the plots are drawn
    into `out_dir` (the output folder being written).

    The inputs are read when a step needs them, and only their columns it reads: every
    chunk's text for the probes (let go before the retrieval metrics, whose rankings of
    the labelled queries are the stage's largest), the kept vectors after them."""
    cfg = run.params.evaluate
    took: dict[str, float] = {}
    with Progress("evaluate", 4, "steps") as bar:
        with _step(took, "retrieval", bar):
            probes, compared = probes_of(folder, run.read(CHUNKS, CHUNKS_READ), run.params,
                                         run.root)
            release_freed_memory()  # the chunks' texts, before the rankings take their place
            xq = folder.encode_queries([q for q, _ in probes])
            metrics = retrieval_quality(folder, probes, xq, run.params, run.root)
            if compared is not None:
                metrics[names.BASE_VS_TUNED] = compared
        release_local_encoders()  # every query is embedded; the rankings are gone too
        vectors, x = run.read_vectors(KEPT, KEPT_READ)
        with _step(took, "index_recall", bar):
            index_m, sweep = _index_quality(folder, x, xq, cfg)
            metrics |= index_m
        with _step(took, "space_health", bar):
            rows = sample_rows(len(x), cfg.health_sample, cfg.seed)
            labels = labels_for(vectors, rows, cfg.label_field, doc_meta)
            sample = x[rows]
            nn = nearest_neighbour_similarity(sample)
            metrics |= space_health(sample, labels, cfg.seed, nn)
        with _step(took, "plots", bar):
            draw_plots(sample, labels, sweep, nn, folder.card.get("search_param"), cfg, out_dir)
    metrics["step_seconds"] = took
    metrics["sweep"] = sweep
    return metrics, probes


@contextmanager
def _step(took: dict[str, float], name: str, bar: Progress) -> Iterator[None]:
    """Time one evaluation step into `took` (seconds, in metrics.json) and advance `bar`."""
    started = time.perf_counter()
    yield
    took[name] = round(time.perf_counter() - started, 3)
    bar.advance(1)


def draw_plots(sample: np.ndarray, labels: list[str] | None, sweep: list[dict],
               nn: np.ndarray, param: str | None, cfg: EvaluateConfig, out_dir: Path) -> None:
    """The map of the first `evaluate.plot_sample` rows of the health sample, the
    search-parameter sweep, the histogram of the sample's nearest-neighbour similarity
    (`nn`)."""
    shown = sample[:cfg.plot_sample]
    plot_map(shown, labels[:len(shown)] if labels else ["chunk"] * len(shown),
             out_dir / PLOTS[0].name, cfg.seed)
    plot_sweep(sweep, param or "nprobe", out_dir / PLOTS[1].name)
    plot_histogram(nn, out_dir / PLOTS[2].name)


def evaluation_report(metrics: dict[str, Any], card: dict[str, Any], index_size: tuple[int, int],
                      chain: list[dict[str, Any]], cfg: EvaluateConfig) -> dict[str, Any]:
    """The metrics with the index's facts, the pipeline's counts and the gate's verdict.

    Args:
        metrics: what `evaluate_all` measured.
        card: the index card.
        index_size: (vectors, dimension) of the index.
        chain: the lineage manifests from dedup back to ingest.
        cfg: the evaluate config (the gate's floors).
    """
    stages = {m["stage"]: m for m in chain}
    out = metrics | {"vectors": index_size[0], "dim": index_size[1],
                     "index_factory": card["factory"], "index_size_bytes": card["size_bytes"],
                     "pca_explained_variance": stages["reduce"].get("explained_variance"),
                     "dedup": stages["dedup"]["rows"]}
    failures = quality_gate(out, cfg)
    return out | {"gate": {"passed": not failures, "failures": failures}}


def doc_metadata(docs: pa.Table) -> dict[str, dict[str, Any]]:
    """doc_id -> the document's metadata mapping."""
    return dict(zip(docs.column("doc_id").to_pylist(),
                    map(json.loads, docs.column("metadata").to_pylist()), strict=True))


@stage_task("evaluate")
def evaluate_task(root: str = ".") -> str:
    """Evaluate vectors and index, write metrics and plots, then apply the quality gate."""
    run = start_stage("evaluate", root)
    cfg = run.params.evaluate
    folder = load_index_folder(run.input_dirs["index"])
    folder.vector_cache = run.vector_cache
    doc_meta = doc_metadata(run.read(INGEST_DOCS, ["doc_id", "metadata"]))
    fp = run.fingerprint(labels_sha256=source_labels_digest(run.root,
                                                             run.params.ingest.source))
    with run.output(fp, cfg) as out:
        out.path(PLOTS_DIR).mkdir()
        measured, probes = evaluate_all(folder, run, doc_meta, out.tmp_dir)
        metrics = evaluation_report(measured, folder.card, (folder.index.ntotal, folder.index.d),
                                    lineage_chain(run.root, run.params, "dedup"), cfg)
        out.write_table(PROBE_QUERIES, pa.table({"query": [q for q, _ in probes],
                                                 "doc_id": [d for _, d in probes]}))
        out.write_json(METRICS, metrics)
        out.record(metrics=metrics, gate=metrics["gate"], rows={"probe_queries": len(probes)})
    write_json_atomic(run.root / METRICS_FILE, metrics)
    append_run(run.root / run.params.paths.runs, run_record(
        datetime.now(UTC), run.lineage(fp), run.params.model_dump(mode="json"), metrics))
    _log_headline(metrics, run.seconds)
    if not metrics["gate"]["passed"]:
        raise ValueError("quality gate failed: " + "; ".join(metrics["gate"]["failures"])
                         + f" (see {run.out_dir / METRICS.name})")
    return str(run.out_dir)


def _log_headline(metrics: dict[str, Any], seconds: float) -> None:
    task_logger().info(
        "evaluate: probe recall@10 %.3f, nDCG@10 %.3f; index recall@10 %.3f (queries) "
        "in %.1f s", metrics[names.PROBE_RECALL_AT_10], metrics[names.PROBE_NDCG_AT_10],
        metrics[names.INDEX_RECALL_QUERIES] or 0.0, seconds)


if __name__ == "__main__":
    main(evaluate_task)
