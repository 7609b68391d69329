"""evaluate: index folder + vectors + chunks -> metrics.json, plots/*.png, queries.parquet.

Measures retrieval through the same query path as `embedpipe search` (BEIR labels when the
corpus has them, a label-free probe always), index recall vs exact search per search
setting, and the health of the space; then applies the quality gate.
Invariant: metrics are written even when the gate fails; the stage then fails.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.config import EvaluateConfig, IngestConfig, Params
from tasks.fingerprint import stage_fingerprint
from tasks.health import nearest_neighbour_similarity, sample_rows, space_health
from tasks.index import RecallProbe, sweep_search_param
from tasks.ingest import make_doc_id
from tasks.io import VECTOR_COLUMN, StageOutput, arrow_to_vectors, read_table, write_json_atomic
from tasks.lineage import lineage_chain
from tasks.plots import plot_histogram, plot_map, plot_sweep
from tasks.probes import probe_queries
from tasks.registry import METRICS_FILE
from tasks.retrieval import doc_rankings, retrieval_metrics
from tasks.runs import append_run
from tasks.runtime import main, start_stage, task_logger
from tasks.s3 import is_s3
from tasks.search import IndexFolder, load_index_folder, set_search_param

PLOTS = ("map.png", "recall_vs_nprobe.png", "nn_similarity.png")
DOC_DEPTH = 100


def row_documents(folder: IndexFolder, dropped: pa.Table, chunk_docs: dict[str, str]
                  ) -> list[list[str]]:
    """For each index row, its own document then those of chunks deduplicated onto it."""
    rows = folder.chunks.select(["chunk_id", "doc_id"]).to_pylist()
    position = {r["chunk_id"]: i for i, r in enumerate(rows)}
    out = [[r["doc_id"]] for r in rows]
    for d in dropped.select(["dropped_chunk_id", "kept_chunk_id"]).to_pylist():
        kept = d["kept_chunk_id"]
        if kept in position and chunk_docs[d["dropped_chunk_id"]] not in out[position[kept]]:
            out[position[kept]].append(chunk_docs[d["dropped_chunk_id"]])
    return out


def search_documents(folder: IndexFolder, texts: list[str], row_docs: list[list[str]]
                     ) -> list[dict[str, float]]:
    """Document rankings for query texts through the index's own query path."""
    if not texts:
        return []
    depth = min(folder.index.ntotal, 3 * DOC_DEPTH)
    scores, ids = folder.search_vectors(folder.encode_queries(texts), depth)
    return doc_rankings(scores, ids, row_docs, DOC_DEPTH)


def find_beir_sets(source: Path) -> list[tuple[str, Path, Path, Path]]:
    """(corpus path relative to source, corpus, queries, qrels) for each BEIR folder."""
    found = []
    for queries in sorted(source.rglob("queries.jsonl")):
        corpus, qrels_dir = queries.with_name("corpus.jsonl"), queries.parent / "qrels"
        qrels = [qrels_dir / n for n in ("test.tsv", "dev.tsv", "train.tsv")
                 if (qrels_dir / n).is_file()]
        if corpus.is_file() and qrels:
            found.append((corpus.relative_to(source).as_posix(), corpus, queries, qrels[0]))
    return found


def read_beir(rel_corpus: str, queries: Path, qrels: Path
              ) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Query texts and qrels keyed by doc_id (as ingest names BEIR documents)."""
    texts = {}
    for n, line in enumerate(queries.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                obj = json.loads(line)
                texts[str(obj["_id"])] = str(obj["text"])
            except (json.JSONDecodeError, KeyError) as err:
                raise ValueError(f"{queries}: line {n}: expected {{'_id', 'text'}} ({err})"
                                 ) from None
    rels: dict[str, dict[str, int]] = {}
    for n, line in enumerate(qrels.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.strip().split("\t")
        if n == 1 and parts[0] == "query-id" or not line.strip():
            continue
        if len(parts) != 3:
            raise ValueError(f"{qrels}: line {n}: expected query-id<TAB>corpus-id<TAB>score")
        if int(parts[2]) > 0 and parts[0] in texts:
            rels.setdefault(parts[0], {})[make_doc_id(rel_corpus, parts[1])] = int(parts[2])
    return {q: t for q, t in texts.items() if q in rels}, rels


def labeled_metrics(folder: IndexFolder, row_docs: list[list[str]], cfg: IngestConfig,
                    source: Path) -> dict[str, dict[str, float]]:
    """Retrieval metrics per BEIR dataset found under the ingest source."""
    out = {}
    for rel, _, queries, qrels in find_beir_sets(source):
        texts, rels = read_beir(rel, queries, qrels)
        qids = sorted(texts)
        ranked = search_documents(folder, [texts[q] for q in qids], row_docs)
        out[rel] = {**retrieval_metrics(rels, dict(zip(qids, ranked, strict=True))),
                    "queries": len(qids)}
    return out


def labels_for(table: pa.Table, rows: np.ndarray, field: str | None,
               doc_meta: dict[str, dict[str, Any]]) -> list[str] | None:
    """One label per sampled row from the source folder or a metadata key."""
    if field is None:
        return None
    docs = table.column("doc_id").take(pa.array(rows)).to_pylist()
    if field == "source_folder":
        sources = table.column("source").take(pa.array(rows)).to_pylist()
        return [s.split("/", 1)[0] if "/" in s else "(top)" for s in sources]
    return [str(doc_meta.get(d, {}).get(field, "(none)")) for d in docs]


def quality_gate(metrics: dict[str, Any], cfg: EvaluateConfig) -> list[str]:
    """The gate's failures, as readable lines (empty when it passes)."""
    checks = [("index_recall_at_10_queries", cfg.min_index_recall),
              ("index_recall_at_10_corpus", cfg.min_index_recall),
              ("probe_recall_at_10", cfg.min_probe_recall_at_10),
              ("labeled_ndcg_at_10", cfg.min_labeled_ndcg_at_10)]
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
    return {"index_recall_at_10_corpus": at_setting["recall_corpus"],
            "index_recall_at_10_queries": at_setting.get("recall_queries"),
            "index_ms_per_query": at_setting.get("ms_per_query")}, sweep


def evaluate_all(folder: IndexFolder, vectors: pa.Table, chunks: pa.Table, dropped: pa.Table,
                 doc_meta: dict[str, dict[str, Any]], params: Params, root: Path,
                 plots_dir: Path) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Every metric of the evaluation, and the label-free probes used."""
    cfg = params.evaluate
    x = arrow_to_vectors(vectors.column(VECTOR_COLUMN))
    chunk_docs = dict(zip(chunks.column("chunk_id").to_pylist(),
                          chunks.column("doc_id").to_pylist(), strict=True))
    row_docs = row_documents(folder, dropped, chunk_docs)
    probes = probe_queries(chunks, cfg.probe_docs, cfg.seed)
    xq = folder.encode_queries([q for q, _ in probes])
    metrics, sweep = _index_quality(folder, x, xq, cfg)
    ranked = search_documents(folder, [q for q, _ in probes], row_docs)
    qrels = {f"p{i}": {doc: 1} for i, (_, doc) in enumerate(probes)}
    probe_m = retrieval_metrics(qrels, {f"p{i}": r for i, r in enumerate(ranked)})
    metrics |= {f"probe_{k}": v for k, v in probe_m.items()} | {"probe_queries": len(probes)}
    labeled = {} if is_s3(params.ingest.source) else labeled_metrics(
        folder, row_docs, params.ingest, root / params.ingest.source)
    if labeled:
        metrics["labeled"] = labeled
        for key in ("recall_at_10", "mrr_at_10", "ndcg_at_10"):
            metrics[f"labeled_{key}"] = round(float(np.mean([m[key] for m in labeled.values()])),
                                              6)
    rows = sample_rows(len(x), cfg.health_sample, cfg.seed)
    labels = labels_for(vectors, rows, cfg.label_field, doc_meta)
    metrics |= space_health(x[rows], labels, cfg.seed)
    plot_rows = rows[:cfg.plot_sample]
    plot_map(x[plot_rows], labels[:len(plot_rows)] if labels else ["chunk"] * len(plot_rows),
             plots_dir / PLOTS[0], cfg.seed)
    plot_sweep(sweep, folder.card.get("search_param") or "nprobe", plots_dir / PLOTS[1])
    plot_histogram(nearest_neighbour_similarity(x[rows]), plots_dir / PLOTS[2])
    metrics["sweep"] = sweep
    return metrics, probes


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(root: str = ".") -> str:
    """Evaluate vectors and index, write metrics and plots, then apply the quality gate."""
    run = start_stage("evaluate", root)
    cfg, log = run.params.evaluate, task_logger()
    folder = load_index_folder(run.input_dirs["index"])
    vectors = read_table(run.input_dirs["dedup"], "vectors.parquet", run.inputs["dedup"])
    dropped = read_table(run.input_dirs["dedup"], "dropped.parquet", run.inputs["dedup"])
    chunks = read_table(run.input_dirs["chunk"], "chunks.parquet", run.inputs["chunk"])
    docs = read_table(run.input_dirs["ingest"], "docs.parquet", run.inputs["ingest"])
    doc_meta = dict(zip(docs.column("doc_id").to_pylist(),
                        map(json.loads, docs.column("metadata").to_pylist()), strict=True))
    fp = stage_fingerprint("evaluate", cfg, run.input_fingerprints)
    out = StageOutput(run.out_dir, "evaluate", fp)
    (plots_dir := out.path("plots")).mkdir()
    metrics, probes = evaluate_all(folder, vectors, chunks, dropped, doc_meta, run.params,
                                   run.root, plots_dir)
    chain = {m["stage"]: m for m in lineage_chain(run.root, run.params, "dedup")}
    metrics |= {"vectors": folder.index.ntotal, "dim": folder.index.d,
                "index_factory": folder.card["factory"],
                "index_size_bytes": folder.card["size_bytes"],
                "pca_explained_variance": chain["reduce"].get("explained_variance"),
                "dedup": chain["dedup"]["rows"]}
    failures = quality_gate(metrics, cfg)
    metrics["gate"] = {"passed": not failures, "failures": failures}
    out.write_table("queries.parquet", pa.table({
        "query": [q for q, _ in probes], "doc_id": [d for _, d in probes]}))
    out.write_json("metrics.json", metrics)
    out.commit(run.manifest(fp, cfg, metrics=metrics, gate=metrics["gate"],
                            rows={"probe_queries": len(probes)}))
    write_json_atomic(run.root / METRICS_FILE, metrics)
    append_run(run.root / run.params.paths.runs, {
        "time_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "fingerprints": run.lineage(fp), "params": run.params.model_dump(mode="json"),
        "metrics": {k: v for k, v in metrics.items() if k != "sweep"},
        "gate": metrics["gate"]["passed"],
    })
    log.info("evaluate: probe recall@10 %.3f, nDCG@10 %.3f; index recall@10 %.3f (queries)",
             metrics["probe_recall_at_10"], metrics["probe_ndcg_at_10"],
             metrics["index_recall_at_10_queries"] or 0.0)
    if failures:
        raise ValueError("quality gate failed: " + "; ".join(failures)
                         + f" (see {run.out_dir / 'metrics.json'})")
    return str(run.out_dir)


if __name__ == "__main__":
    main(evaluate_task)
