"""A generated, text-like corpus of a chosen size, with planted queries for quality.

Documents are recombined from the sentences of `data/sample` (real English, eight topics):
each document draws one topic's sentences, lightly perturbed, in a random order and length.
Its title (a clause of its first sentence) is the planted query; the document is the answer.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

CHUNKS_PER_DOC = 2.2  # measured on generated docs with the default 200-token chunks


def sample_sentences(sample_dir: Path) -> dict[str, list[str]]:
    """Topic (first folder) -> sentences of the sample corpus, read and cleaned by the stages'
    own pure functions."""
    from tasks.clean import clean_text
    from tasks.core.config import CleanConfig, IngestConfig
    from tasks.documents.decoding import parse_file

    pools: dict[str, list[str]] = {}
    for path in sorted(p for p in sample_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(sample_dir).as_posix()
        docs, _ = parse_file(rel, path.read_bytes(), IngestConfig())
        for doc in docs:
            text = clean_text(doc["text"], doc["format"], rel, CleanConfig())[1]
            pools.setdefault(rel.split("/", 1)[0], []).extend(_split(text))
    return {t: sorted(set(p)) for t, p in pools.items() if len(p) > 20 and t != "bad"}


def _split(text: str) -> list[str]:
    out = []
    for s in re.split(r"(?<=[.!?])\s+", text.replace("\n", " ")):
        if 6 <= len(s.split()) <= 60:
            out.append(s.strip())
    return out


def generate(out_dir: Path, n_chunks: int, sample_dir: Path, seed: int = 0) -> dict:
    """Write corpus.jsonl, queries.jsonl and qrels/test.tsv (BEIR layout) under `out_dir`."""
    rng = random.Random(seed)
    pools = sample_sentences(sample_dir)
    topics = sorted(pools)
    n_docs = max(10, int(n_chunks / CHUNKS_PER_DOC))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "qrels").mkdir(exist_ok=True)
    with open(out_dir / "corpus.jsonl", "w") as corpus, \
         open(out_dir / "queries.jsonl", "w") as queries, \
         open(out_dir / "qrels" / "test.tsv", "w") as qrels:
        qrels.write("query-id\tcorpus-id\tscore\n")
        for i in range(n_docs):
            topic = rng.choice(topics)
            length = int(rng.lognormvariate(2.0, 0.6)) + 2  # 3 .. ~40 sentences, long tail
            body = [_perturb(rng.choice(pools[topic]), rng) for _ in range(length)]
            words = body[0].split()
            title = " ".join(words[: rng.randint(4, min(9, len(words)))])
            doc_id = f"g{i:07d}"
            corpus.write(json.dumps({"_id": doc_id, "title": title,
                                     "text": " ".join(body), "topic": topic}) + "\n")
            if i % 10 == 0:  # a tenth of the documents get a planted query
                queries.write(json.dumps({"_id": f"q{i:07d}", "text": title}) + "\n")
                qrels.write(f"q{i:07d}\t{doc_id}\t1\n")
    return {"docs": n_docs, "queries": (n_docs + 9) // 10, "topics": len(topics)}


def _perturb(sentence: str, rng: random.Random) -> str:
    words = sentence.split()
    if len(words) > 8 and rng.random() < 0.5:
        i, j = rng.sample(range(1, len(words) - 1), 2)
        words[i], words[j] = words[j], words[i]
    return " ".join(words)
