"""Base vs fine-tuned model, side by side in one run: dense hit@1 / hit@10 / nDCG@10 of the
corpus's own queries whose target document was held out of training (never trained on), the
pairs, steps and minutes the finetune stage spent, and its gate's label-free scores.

    python -m benchmarks.finetune --families 150 --filler 300 --max-steps 40
    python -m benchmarks.finetune --corpus DIR   # DIR/corpus/... and DIR/queries.jsonl

`DIR/queries.jsonl` holds {query, source (the target's path under corpus/), kind}: the
families corpus (benchmarks/families.py) or a real one (the Debian manpages and docs corpora
of benchmarks/debian_corpora.py). The finetune stage runs as a pipeline run would
(`finetune.enabled: true`), with its gate forced open (`min_gain: -1`) so the tuned model is
kept to be measured; the gate's decision at the default `min_gain` is reported beside it.
Both models are scored with PyTorch fp32, exact search over every chunk of the corpus.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.families import generate
from benchmarks.report import cpu_label, save, timed_stages

REPO = Path(__file__).resolve().parents[1]
BUILD = ("ingest", "clean", "chunk", "finetune")
DEPTH = 100  # chunks searched per query before ranking documents


def build(ws: Path, corpus: Path, overrides: dict[str, Any]) -> dict[str, float]:
    """ingest -> finetune in `ws`; seconds per stage."""
    from tasks.core.params_file import write_overrides

    ws.mkdir(parents=True)
    (ws / "params.yaml").write_text((REPO / "params.yaml").read_text())
    write_overrides(ws / "params.yaml", {"ingest.source": str(corpus), "encode.device": "cpu",
                                         "finetune.enabled": True, "finetune.min_gain": -1.0,
                                         **overrides})
    return timed_stages(ws, BUILD)


def doc_ranks(encode: Any, texts: list[str], docs: list[str], queries: list[str],
              targets: list[str]) -> np.ndarray:
    """Rank (1-based, 0 when not in the top documents) of each query's target document; a
    document ranks by its best chunk."""
    import faiss

    xb = encode(texts, False)
    index = faiss.IndexFlatIP(xb.shape[1])
    index.add(xb)
    _, ids = index.search(encode(queries, True), min(DEPTH, len(texts)))
    ranks = np.zeros(len(queries), dtype=int)
    for q, (row, target) in enumerate(zip(ids, targets, strict=True)):
        seen: list[str] = []
        for i in row:
            if i >= 0 and docs[i] not in seen:
                seen.append(docs[i])
        ranks[q] = seen.index(target) + 1 if target in seen else 0
    return ranks


def metrics(ranks: np.ndarray) -> dict[str, float]:
    """hit@1, hit@10 and nDCG@10 (one relevant document per query)."""
    found = ranks > 0
    return {"hit_at_1": round(float(np.mean(ranks == 1)), 4),
            "hit_at_10": round(float(np.mean(found & (ranks <= 10))), 4),
            "ndcg_at_10": round(float(np.mean([1 / math.log2(r + 1) if 0 < r <= 10 else 0.0
                                               for r in ranks])), 4)}


def held_out_queries(ws: Path, queries: list[dict[str, str]]) -> tuple[list[dict], Any]:
    """The queries whose target document the finetune stage held out, with their doc_id;
    and the chunk table."""
    import pyarrow.parquet as pq

    from tasks.core.config import load_params
    from tasks.tuning.pairs import held_out

    cfg = load_params(ws / "params.yaml").finetune
    chunks = pq.read_table(ws / "data/03_chunk/chunks.parquet",
                           columns=["doc_id", "source", "text"])
    doc_of = dict(zip(chunks.column("source").to_pylist(), chunks.column("doc_id").to_pylist(),
                      strict=True))
    out = [q | {"doc_id": doc_of[q["source"]]} for q in queries if q["source"] in doc_of
           and held_out(doc_of[q["source"]], cfg.holdout, cfg.seed)]
    return out, chunks


def score(ws: Path, queries: list[dict[str, str]]) -> dict[str, Any]:
    """Base and tuned dense metrics over the held-out queries, overall and per kind."""
    from tasks.core.config import load_params
    from tasks.encoders.model import resolve_model_path
    from tasks.finetune import torch_encoder

    params = load_params(ws / "params.yaml")
    card = json.loads((ws / "data/03_finetune/card.json").read_text())
    held, chunks = held_out_queries(ws, queries)
    texts, docs = chunks.column("text").to_pylist(), chunks.column("doc_id").to_pylist()
    folders = {"base": resolve_model_path(params.encode.model),
               "tuned": ws / "data/03_finetune" / card["tuned"]["folder"]}
    out: dict[str, Any] = {"queries": len(held)}
    for side, folder in folders.items():
        ranks = doc_ranks(torch_encoder(folder, params.encode, "cpu"), texts, docs,
                          [q["query"] for q in held], [q["doc_id"] for q in held])
        out[side] = {"all": metrics(ranks)} | {
            kind: metrics(ranks[[q["kind"] == kind for q in held]])
            for kind in sorted({q.get("kind", "query") for q in held})}
    return out


def gate_at_default(card: dict[str, Any]) -> dict[str, Any]:
    """The gate's decision at the default min_gain, from the stage's own paired test."""
    from tasks.core.config import FinetuneConfig
    from tasks.tuning.gate import verdict

    gate = card["gate"]
    if "lower" not in gate:
        return gate
    test = {k: gate[k] for k in ("test", "resamples", "confidence", "n", "mean_gain", "lower",
                                 "upper", "wins", "losses", "ties")}
    return verdict(test, FinetuneConfig().min_gain, gate["metric"], gate["group"])


def run_corpus(base: Path, corpus: Path, queries_path: Path, overrides: dict[str, Any]
               ) -> dict[str, Any]:
    queries = [json.loads(x) for x in queries_path.read_text().splitlines() if x.strip()]
    seconds = build(base / "ws", corpus, overrides)
    card = json.loads((base / "ws/data/03_finetune/card.json").read_text())
    return {"seconds": seconds, "pairs": card["pairs"], "kinds": card["kinds"],
            "negatives": card.get("negatives"), "steps": card["steps"],
            "stopped_by": card["stopped_by"], "minutes": card["minutes"],
            "documents": card["documents"], "gate_scores": card["scores"],
            "gate_at_default": gate_at_default(card), "losses": card["losses"],
            "dense": score(base / "ws", queries)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    overrides = {f"finetune.{k}": v for k, v in (
        ("max_steps", args.max_steps), ("batch_size", args.batch_size),
        ("max_minutes", args.max_minutes), ("loss", args.loss), ("negatives", args.negatives),
        ("max_seq_length", args.max_seq_length), ("learning_rate", args.learning_rate))}
    with tempfile.TemporaryDirectory(prefix="embedpipe-finetune-") as tmp:
        base = Path(tmp)
        if args.corpus is None:
            info = generate(base, args.families, args.filler, REPO / "data/sample", args.seed)
            corpus, name = base, "families"
        else:
            corpus, name, info = Path(args.corpus), Path(args.corpus).name, {}
        result = run_corpus(base, corpus / "corpus", corpus / "queries.jsonl", overrides)
    return {"corpus": name, "corpus_info": info, "overrides": overrides, "cpu": cpu_label(),
            **result}


def markdown(r: dict[str, Any]) -> str:
    """The report as a table: base vs tuned, per query kind, and what training cost."""
    lines = [f"## Fine-tune on `{r['corpus']}` ({r['cpu']})", "",
             f"{r['pairs']} pairs {r['kinds']}, {r['steps']} steps ({r['stopped_by']}), "
             f"{r['minutes']} min of training; documents {r['documents']}; "
             f"{r['dense']['queries']} held-out queries.", "",
             "| queries | base hit@1 | tuned hit@1 | base hit@10 | tuned hit@10 | "
             "base nDCG@10 | tuned nDCG@10 |", "|---|---|---|---|---|---|---|"]
    for kind, b in r["dense"]["base"].items():
        t = r["dense"]["tuned"][kind]
        lines.append(f"| {kind} | " + " | ".join(
            f"{b[m]:.3f} | {t[m]:.3f}" for m in ("hit_at_1", "hit_at_10", "ndcg_at_10")) + " |")
    gate = r["gate_at_default"]
    lines += ["", f"Gate at the default min_gain: uses the **{gate['use']}** model: "
              f"{gate['reason']}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", help="a folder with corpus/ and queries.jsonl")
    parser.add_argument("--families", type=int, default=150)
    parser.add_argument("--filler", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-minutes", type=float, default=20.0)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--loss", default="cached_mnrl", choices=["cached_mnrl", "gist"])
    parser.add_argument("--negatives", default="bm25",
                        choices=["none", "bm25", "dense", "both"])
    parser.add_argument("--name", default="finetune", help="report file name under --out")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/out")
    args = parser.parse_args()
    report = run(args)
    save(args.out, args.name, report, markdown(report))


if __name__ == "__main__":
    main()
