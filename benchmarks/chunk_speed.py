"""The chunk stage's pure code on a generated corpus, against the floor the tokenizer sets.

    python -m benchmarks.chunk_speed --chunks 10000      # median of 3

Times `chunk_documents` (default params: sentence strategy, 200-token budget) over the
documents of `benchmarks.corpus` in one process, and, on the same documents: one batched
tokenization of every document (the fast tokenizer's batch API, what the chunker cannot go
below), spaCy's sentencizer over every document and `sentence_starts` (the same boundaries).
Writes benchmarks/out/chunk_speed.json and .md. The script only imports what every version of
the chunker has, so it runs on an older checkout too (copy it there) for a before/after.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.report import cpu_label, save

REPO = Path(__file__).resolve().parents[1]


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times), 3)


def measure(corpus: Path, repeats: int) -> dict[str, Any]:
    import pyarrow as pa

    from tasks.chunk import chunk_documents
    from tasks.core.config import ChunkConfig, EncodeConfig
    from tasks.documents.sentences import sentencizer
    from tasks.encoders.model import load_tokenizer

    rows = [json.loads(line) for line in (corpus / "corpus.jsonl").open()]
    texts = [r["text"] for r in rows]
    docs = pa.table({"doc_id": [r["_id"] for r in rows], "source": ["s"] * len(rows),
                     "format": ["text"] * len(rows), "title": [r["title"] for r in rows],
                     "text": texts})
    tok = load_tokenizer(EncodeConfig().model)
    backend = copy.deepcopy(tok.backend_tokenizer)
    backend.no_truncation()
    backend.no_padding()
    nlp = sentencizer()
    chunks = chunk_documents(docs, ChunkConfig(), 200, tok)  # warm: memo, lexemes, threads
    out = {"docs": len(rows), "chunks": chunks.num_rows,
           "tokens_in_chunks": int(sum(chunks.column("n_tokens").to_pylist())),
           "tokens_in_docs": sum(len(e.ids) for e in backend.encode_batch(
               texts, add_special_tokens=False)),
           "chunk_s": _median_seconds(lambda: chunk_documents(docs, ChunkConfig(), 200, tok),
                                      repeats),
           "tokenize_once_s": _median_seconds(
               lambda: backend.encode_batch(texts, add_special_tokens=False), repeats),
           "spacy_sentencizer_s": _median_seconds(lambda: [nlp(t) for t in texts], repeats)}
    try:
        from tasks.documents.sentences import sentence_starts
    except ImportError:  # a checkout before it existed
        return out
    out["sentence_starts_s"] = _median_seconds(lambda: [sentence_starts(t) for t in texts],
                                               repeats)
    return out


def markdown(r: dict[str, Any]) -> str:
    m = r["measured"]
    lines = [f"Chunking {m['docs']:,} generated documents ({m['tokens_in_docs']:,} tokens) into "
             f"{m['chunks']:,} chunks, median of {r['repeats']}; {r['cpu']}:", "",
             "| what | seconds | per second |", "|---|---|---|",
             f"| `chunk_documents` (sentence, 200 tokens) | {m['chunk_s']:.2f} | "
             f"{m['chunks'] / m['chunk_s']:,.0f} chunks, "
             f"{m['tokens_in_docs'] / m['chunk_s']:,.0f} tokens |",
             f"| one batched tokenization of every document (the floor) | "
             f"{m['tokenize_once_s']:.2f} | {m['tokens_in_docs'] / m['tokenize_once_s']:,.0f} "
             "tokens |",
             f"| spaCy's sentencizer over every document | {m['spacy_sentencizer_s']:.2f} | |"]
    if "sentence_starts_s" in m:
        lines.append(f"| `sentence_starts` over every document (same boundaries) | "
                     f"{m['sentence_starts_s']:.2f} | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from benchmarks.corpus import generate

    with tempfile.TemporaryDirectory(prefix="embedpipe-chunk-speed-") as tmp:
        generate(Path(tmp), args.chunks, REPO / "data" / "sample")
        report = {"cpu": cpu_label(), "repeats": args.repeats, "target_chunks": args.chunks,
                  "measured": measure(Path(tmp), args.repeats)}
    save(args.out, "chunk_speed", report, markdown(report))


if __name__ == "__main__":
    main()
