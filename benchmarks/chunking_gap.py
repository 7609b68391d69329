"""Where LangChain's lead on the generated corpus's planted queries comes from: the same
encoder (embedpipe's default, OpenVINO int8) on both sides' chunks, searched exactly.

    python -m benchmarks.chunking_gap --chunks 22000     # the 10k-document corpus of run.py

Per chunking (embedpipe's stages ingest -> chunk with the default params; LangChain's
RecursiveCharacterTextSplitter as `benchmarks/langchain_side.py` runs it): chunk count,
document recall@1/@10 and nDCG@10 of the planted queries over the top 50 chunks, and how many
chunks hold nothing but a document's title. Writes benchmarks/out/chunking-gap-<n>.json/.md.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.report import cpu_label, save

REPO = Path(__file__).resolve().parents[1]


def embedpipe_chunks(corpus: Path, ws: Path) -> tuple[list[str], list[str]]:
    """(texts as encode sees them, doc ids) of embedpipe's chunks of `corpus`."""
    import pyarrow.parquet as pq

    from flows.pipeline import STAGE_TASKS
    from tasks.core.params_file import write_overrides
    from tasks.documents.context import contextual_texts

    (ws / "params.yaml").write_text((REPO / "params.yaml").read_text())
    write_overrides(ws / "params.yaml", {"ingest.source": str(corpus)})
    for name in ("ingest", "clean", "chunk"):
        STAGE_TASKS[name].fn(root=str(ws))
    chunks = pq.read_table(ws / "data/03_chunk/chunks.parquet")
    return contextual_texts(chunks), chunks.column("doc_id").to_pylist()


def langchain_chunks(corpus: Path) -> tuple[list[str], list[str]]:
    """(texts, doc ids as embedpipe names them) of LangChain's chunks of `corpus`."""
    from benchmarks import langchain_side as lc
    from tasks.documents.decoding import make_doc_id

    chunks = lc.chunk(lc.ingest(corpus))
    return ([c.page_content for c in chunks],
            [make_doc_id("corpus.jsonl", c.metadata["doc_id"]) for c in chunks])


def score(texts: list[str], docs: list[str], corpus: Path) -> dict[str, Any]:
    from benchmarks.run import exact_doc_run
    from tasks.core.config import EncodeConfig
    from tasks.encoders.loading import encoder_for
    from tasks.evaluation.beir import find_beir_sets, read_beir
    from tasks.evaluation.metrics import retrieval_metrics

    rel, _, query_file, qrels_file = find_beir_sets(corpus)[0]
    query_text, qrels = read_beir(rel, query_file, qrels_file)  # keyed by embedpipe doc_id
    queries = [query_text[q] for q in sorted(qrels)]
    model = encoder_for(EncodeConfig())
    run = exact_doc_run(model.encode(queries, normalize_embeddings=True),
                        model.encode(texts, batch_size=32, normalize_embeddings=True),
                        sorted(qrels), docs)
    titles = {json.loads(line)["title"].strip()
              for line in (corpus / "corpus.jsonl").read_text().splitlines()}
    metrics = retrieval_metrics(qrels, run)
    return {"chunks": len(texts), "title_only_chunks": sum(t.strip() in titles for t in texts),
            **{k: round(metrics[k], 4) for k in ("recall_at_1", "recall_at_10", "ndcg_at_10")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chunks", type=int, default=22000, help="target chunk count")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from benchmarks.corpus import generate

    with tempfile.TemporaryDirectory(prefix="embedpipe-gap-") as tmp:
        corpus, ws = Path(tmp) / "corpus", Path(tmp) / "ws"
        ws.mkdir()
        report = {"corpus": generate(corpus, args.chunks, REPO / "data" / "sample"),
                  "cpu": cpu_label(), "encoder": "embedpipe default (OpenVINO int8)",
                  "embedpipe": score(*embedpipe_chunks(corpus, ws), corpus),
                  "langchain": score(*langchain_chunks(corpus), corpus)}
    lines = [f"corpus: {report['corpus']['docs']} docs; {report['cpu']}; one encoder for both",
             "", "| chunking | chunks | title-only chunks | recall@1 | recall@10 | nDCG@10 |",
             "|---|---|---|---|---|---|"]
    for side in ("embedpipe", "langchain"):
        r = report[side]
        lines.append(f"| {side} | {r['chunks']} | {r['title_only_chunks']} | {r['recall_at_1']}"
                     f" | {r['recall_at_10']} | {r['ndcg_at_10']} |")
    save(args.out, f"chunking-gap-{args.chunks}", report, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
