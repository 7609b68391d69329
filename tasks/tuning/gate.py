"""The gate against overfitting: base and tuned models scored on held-out documents only.

Probes are of the mined kinds, made from documents never trained on: a sentence whose text
is removed from its document's chunks (inverse cloze), a heading line removed the same way.
So a probe's words are not in the text it must find, as with a real query. Labelled queries
(BEIR qrels) whose documents are held out are scored too and, where present, decide.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np
import pyarrow as pa

from tasks.evaluation.metrics import doc_rankings, retrieval_metrics
from tasks.tuning.pairs import MAX_WORDS, MIN_CONTEXT_WORDS, MIN_WORDS, heading_pairs, sentences

Encode = Callable[[list[str], bool], np.ndarray]  # (texts, as_queries) -> unit vectors
Qrels = dict[str, dict[str, int]]
DEPTH = 100  # chunks searched per probe before ranking documents
REPORTED = ("recall_at_1", "recall_at_10", "ndcg_at_10")


@dataclass(frozen=True)
class GateSet:
    """Probes and the corpus they are searched in (chunk texts with probe text removed)."""

    queries: dict[str, str]  # query id -> text
    qrels: Qrels  # query id -> {doc_id: relevance}
    kinds: dict[str, str]  # query id -> cloze | heading | labeled
    texts: list[str]
    docs: list[str]


def _doc_probe(rows: list[dict], rng: np.random.Generator) -> tuple[str, str] | None:
    """(probe text, kind) for one document: a heading when it has one, else a sentence."""
    heads = [h for r in rows for h, _ in heading_pairs(r["text"] or "", None)]
    if heads and rng.random() < 0.5:
        return heads[int(rng.integers(len(heads)))], "heading"
    row = rows[int(rng.integers(len(rows)))]
    text = row["text"] or ""
    spans = [text[a:b] for a, b in sentences(text) if MIN_WORDS <= len(text[a:b].split())
             <= MAX_WORDS]
    if not spans or len(text.split()) - len(spans[0].split()) < MIN_CONTEXT_WORDS:
        return (heads[0], "heading") if heads else None
    return spans[int(rng.integers(len(spans)))], "cloze"


def gate_set(chunks: pa.Table, held: set[str], n_queries: int, max_chunks: int, seed: int,
             labeled: tuple[dict[str, str], Qrels] | None = None) -> GateSet:
    """Probes from up to `n_queries` held-out documents (seeded), plus the labelled queries
    whose relevant documents are all held out; the corpus: every held-out chunk (probe text
    removed from its document), then a seeded sample of the others, `max_chunks` in all."""
    rows = chunks.select(["chunk_id", "doc_id", "text"]).to_pylist()
    by_doc: dict[str, list[dict]] = {}
    for r in rows:
        by_doc.setdefault(r["doc_id"], []).append(r)
    rng = np.random.default_rng(seed)
    picked = sorted(held & set(by_doc))
    picked = [picked[i] for i in np.sort(rng.choice(len(picked), min(n_queries, len(picked)),
                                                    replace=False))]
    queries, qrels, kinds, removed = {}, {}, {}, {}
    for doc in picked:
        if (probe := _doc_probe(by_doc[doc], rng)) is not None:
            qid = f"probe-{len(queries)}"
            queries[qid], qrels[qid], kinds[qid] = probe[0], {doc: 1}, probe[1]
            removed[doc] = probe[0]
    for qid, rel in (labeled[1].items() if labeled else ()):
        if rel and set(rel) <= held:
            queries[qid], qrels[qid], kinds[qid] = labeled[0][qid], rel, "labeled"
    inside = [r for r in rows if r["doc_id"] in held]
    others = [r for r in rows if r["doc_id"] not in held]
    room = max(0, max_chunks - len(inside))
    if room < len(others):
        others = [others[i] for i in np.sort(rng.choice(len(others), room, replace=False))]
    corpus = inside + others
    texts = [(r["text"] or "").replace(removed.get(r["doc_id"], "\0"), " ") for r in corpus]
    return GateSet(queries, qrels, kinds, texts, [r["doc_id"] for r in corpus])


def score_model(encode: Encode, gate: GateSet) -> dict[str, dict[str, float]]:
    """recall@1/@10 and nDCG@10 of the documents found, per probe kind and `all` (probes
    only: labelled queries count on their own, as `labeled`)."""
    if not gate.queries:
        return {}
    qids = list(gate.queries)
    xb = encode(gate.texts, False)
    index = faiss.IndexFlatIP(xb.shape[1])
    index.add(np.ascontiguousarray(xb, dtype="float32"))
    xq = encode([gate.queries[q] for q in qids], True)
    scores, ids = index.search(np.ascontiguousarray(xq, dtype="float32"),
                               min(DEPTH, index.ntotal))
    ranked = dict(zip(qids, doc_rankings(scores, ids, [[d] for d in gate.docs]), strict=True))
    groups = {"all": [q for q in qids if gate.kinds[q] != "labeled"]}
    for q in qids:
        groups.setdefault(gate.kinds[q], []).append(q)
    out = {}
    for name, members in groups.items():
        if members:
            m = retrieval_metrics({q: gate.qrels[q] for q in members},
                                  {q: ranked[q] for q in members})
            out[name] = {k: m[k] for k in REPORTED} | {"queries": len(members)}
    return out


def decide(base: dict[str, dict[str, float]], tuned: dict[str, dict[str, float]],
           metric: str, min_gain: float) -> dict[str, object]:
    """Use the tuned model only if it beats the base by `min_gain` on `metric`, over the
    labelled queries when there are some (labels outrank probes), else over the probes."""
    group = "labeled" if "labeled" in base else "all"
    if group not in base:
        return {"use": "base", "group": group, "metric": metric,
                "reason": "no held-out probe to judge the tuned model on"}
    b, t = base[group][metric], tuned[group][metric]
    gain = round(t - b, 6)
    # a model no better than the base is not used, unless a negative min_gain says so
    use = "tuned" if gain >= min_gain and (gain > 0 or min_gain < 0) else "base"
    verdict = "beats" if use == "tuned" else "does not beat"
    return {"use": use, "group": group, "metric": metric, "base": b, "tuned": t,
            "gain": gain, "min_gain": min_gain,
            "reason": f"tuned {metric} {t:.4f} {verdict} base {b:.4f} by {min_gain} "
                      f"({group} held-out queries, gain {gain:+.4f})"}
