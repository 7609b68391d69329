"""The CPU backends side by side on the same chunks: speed against the hardware ceiling, and
retrieval quality against fp32 exact search.

    python -m benchmarks.encode_backends [--chunks 3000]

A generated corpus (benchmarks/corpus.py) is chunked by embedpipe; each backend then encodes
the chunks and the planted queries in its own process, through the encode stage's own path
(`tasks.encode.encode_texts`: unique texts, length-sorted blocks), after one warm-up call
that also builds a missing export. Reported per backend: tokens/s and its fraction of the
int8 and fp32 peaks (benchmarks/ceiling.py), cosine to PyTorch fp32 per chunk, and recall@10
/ nDCG@10 of the planted queries by exact inner-product search over the chunks (documents
ranked by their best chunk), with the difference to fp32 in points.
Writes benchmarks/out/encode_backends.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import cpu_label, save

REPO = Path(__file__).resolve().parents[1]
# (label, encode params); the first is the reference every other is compared with
BACKENDS = (
    ("torch fp32", {"backend": "torch", "precision": "fp32"}),
    ("onnx int8", {"backend": "onnx", "precision": "int8"}),
    ("openvino fp32", {"backend": "openvino", "precision": "fp32"}),
    ("openvino int8", {"backend": "openvino", "precision": "int8"}),
)


def chunk_corpus(corpus: Path, ws: Path) -> None:
    """ingest -> clean -> chunk of `corpus` in workspace `ws`."""
    from flows.pipeline import STAGE_TASKS
    from tasks.core.params_file import write_overrides

    ws.mkdir(parents=True)
    (ws / "params.yaml").write_text((REPO / "params.yaml").read_text())
    write_overrides(ws / "params.yaml", {"ingest.source": str(corpus)})
    for name in ("ingest", "clean", "chunk"):
        STAGE_TASKS[name].fn(root=str(ws))


def encode_side(ws: Path, corpus: Path, settings: dict[str, Any], out: Path
                ) -> dict[str, Any]:
    """Encode the chunks and queries with `settings`; vectors to `out`.npz; seconds."""
    import pyarrow.parquet as pq

    from benchmarks.run import _queries
    from tasks.core.config import EncodeConfig
    from tasks.encode import encode_texts
    from tasks.encoders.loading import encoder_for
    from tasks.encoders.model import prefixes

    cfg = EncodeConfig(device="cpu", **settings)
    texts = pq.read_table(ws / "data/03_chunk/chunks.parquet").column("text").to_pylist()
    started = time.perf_counter()
    model = encoder_for(cfg)
    load_s = time.perf_counter() - started
    passage, query = prefixes(cfg)
    encode_texts(model, texts[:64], cfg, passage)  # warm-up: first-call allocations
    started = time.perf_counter()
    x = encode_texts(model, texts, cfg, passage)
    seconds = time.perf_counter() - started
    xq = encode_texts(model, _queries(corpus)[0], cfg, query)
    np.savez(out, chunks=x, queries=xq)
    return {"seconds": round(seconds, 3), "load_s": round(load_s, 2)}


def quality(x: np.ndarray, xq: np.ndarray, docs: list[str], corpus: Path) -> dict[str, float]:
    """recall@10 and nDCG@10 of the planted queries, exact inner-product search."""
    from tasks.evaluation.beir import find_beir_sets, read_beir
    from tasks.evaluation.metrics import retrieval_metrics

    rel, _, query_file, qrels_file = find_beir_sets(corpus)[0]
    query_text, qrels = read_beir(rel, query_file, qrels_file)
    top = np.argsort(-(xq @ x.T), axis=1)[:, :50]
    run: dict[str, dict[str, float]] = {}
    for q, row in zip(sorted(query_text), top, strict=True):
        ranked: dict[str, float] = {}
        for rank, i in enumerate(row):
            ranked.setdefault(docs[i], -float(rank))
        run[q] = ranked
    metrics = retrieval_metrics(qrels, run)
    return {k: metrics[k] for k in ("recall_at_10", "ndcg_at_10")}


def markdown(report: dict[str, Any]) -> str:
    c = report["ceiling"]
    lines = [f"# Encode backends on the CPU ({report['cpu']})", "",
             f"{report['chunks']} chunks, {report['tokens']} tokens (mean sequence "
             f"{c['mean_seq_len']}), {report['queries']} planted queries. Ceiling at "
             f"{c['mflops_per_token']} MFLOP/token: int8 peak "
             f"{c['ceiling_tokens_per_s']['int8_peak']} tokens/s, fp32 peak "
             f"{c['ceiling_tokens_per_s']['fp32_peak']} ({c['cpu']['isa']}, "
             f"{c['cpu']['cores']} cores at {c['cpu']['ghz']} GHz).", "",
             "| backend | encode s | tokens/s | of int8 peak | of fp32 peak | cosine to fp32 "
             "min / mean | recall@10 | nDCG@10 | nDCG@10 vs fp32 (points) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, row in report["backends"].items():
        f = c["fraction"][label]
        lines.append(
            f"| {label} | {row['seconds']} | {row['tokens_per_s']:.0f} | {f['int8_peak']:.1%} "
            f"| {f['fp32_peak']:.1%} | {row['cosine_min']:.4f} / {row['cosine_mean']:.4f} "
            f"| {row['recall_at_10']:.4f} | {row['ndcg_at_10']:.4f} | {row['ndcg_points']:+.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chunks", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--ws", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.side:
        settings = dict(BACKENDS)[args.side]
        result = encode_side(args.ws, args.corpus, settings, args.ws / f"{args.side}.npz")
        (args.ws / f"{args.side}.json").write_text(json.dumps(result))
        return
    import pyarrow.parquet as pq

    from benchmarks.ceiling import encode_ceiling
    from benchmarks.corpus import generate
    from tasks.core.config import EncodeConfig
    from tasks.encoders.model import resolve_model_path

    with tempfile.TemporaryDirectory(prefix="embedpipe-backends-") as tmp:
        corpus, ws = Path(tmp) / "corpus", Path(tmp) / "ws"
        generate(corpus, args.chunks, REPO / "data" / "sample")
        chunk_corpus(corpus, ws)
        table = pq.read_table(ws / "data/03_chunk/chunks.parquet")
        docs = table.column("doc_id").to_pylist()
        n_chunks = table.num_rows
        tokens = int(sum(table.column("n_tokens").to_pylist())) + 2 * n_chunks  # CLS, SEP
        rows: dict[str, dict[str, Any]] = {}
        reference = BACKENDS[0][0]  # encoded first; every other is compared with it
        for label, _ in BACKENDS:
            subprocess.run([sys.executable, "-m", "benchmarks.encode_backends", "--side",
                            label, "--ws", str(ws), "--corpus", str(corpus)], cwd=REPO,
                           check=True)
            row = json.loads((ws / f"{label}.json").read_text())
            vectors = np.load(ws / f"{label}.npz")
            x = vectors["chunks"]
            cos = (x * np.load(ws / f"{reference}.npz")["chunks"]).sum(axis=1)
            row |= {"tokens_per_s": round(tokens / row["seconds"], 1),
                    "cosine_min": round(float(cos.min()), 4),
                    "cosine_mean": round(float(cos.mean()), 4),
                    **quality(x, vectors["queries"], docs, corpus)}
            row["ndcg_points"] = round(
                100 * (row["ndcg_at_10"] - rows.get(reference, row)["ndcg_at_10"]), 2)
            rows[label] = row
        ceiling = encode_ceiling(resolve_model_path(EncodeConfig().model), tokens / n_chunks,
                                 {label: row["tokens_per_s"] for label, row in rows.items()})
        report = {"cpu": cpu_label(), "chunks": n_chunks, "tokens": tokens,
                  "queries": len((corpus / "queries.jsonl").read_text().splitlines()),
                  "backends": rows, "ceiling": ceiling}
    save(args.out, "encode_backends", report, markdown(report))


if __name__ == "__main__":
    main()
