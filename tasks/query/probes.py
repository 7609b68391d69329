"""Query-like probes made from the corpus itself: a document's title, else one sentence.

Real queries are short; probing an index with whole passages overstates its recall and
says nothing about retrieval. These probes need no labels: the answer is the source document.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from tasks.documents.sentences import sentencizer

MIN_WORDS = 6
MAX_WORDS = 40


def _sentences(text: str) -> list[str]:
    return [s.text.strip() for s in sentencizer()(text).sents]


def probe_queries(chunks: pa.Table, n: int, seed: int) -> list[tuple[str, str]]:
    """Up to `n` (query text, doc_id) pairs from a seeded sample of documents.

    Args:
        chunks: rows with doc_id, title, text (chunk or dedup output), in corpus order.
        n: number of documents to probe.
        seed: sample seed.
    """
    docs: dict[str, tuple[str | None, str]] = {}
    for row in chunks.select(["doc_id", "title", "text"]).to_pylist():
        docs.setdefault(row["doc_id"], (row["title"], row["text"]))
    ids = sorted(docs)
    rng = np.random.default_rng(seed)
    picked = [ids[i] for i in np.sort(rng.choice(len(ids), size=min(n, len(ids)),
                                                 replace=False))]
    out = []
    for doc_id in picked:
        title, text = docs[doc_id]
        if title and len(title.split()) >= 2:
            out.append((title, doc_id))
            continue
        candidates = [s for s in _sentences(text)
                      if MIN_WORDS <= len(s.split()) <= MAX_WORDS]
        if candidates:
            out.append((candidates[int(rng.integers(len(candidates)))], doc_id))
    return out
