"""The gate against overfitting: base and tuned models scored on held-out documents only, and
a paired test that decides whether the tuned model is used.

Probes are of the mined kinds, made from documents never trained on, up to one per held-out
chunk: a sentence whose text is removed from its document's chunks (inverse cloze), or a
heading line removed the same way. So a probe's words are not in the text it must find, as
with a real query. Labelled queries (BEIR qrels of held-out documents, the held-out share of
a JSONL of pairs) are scored too and, where present, decide: labels outrank probes.

The decision is paired: each query's metric under the base and the tuned model, the mean
gain with a seeded bootstrap confidence interval, and the tuned model only when the
interval's lower bound is above `finetune.min_gain`. A few dozen probes cannot pass it by
chance the way a difference of two means could.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import faiss
import ir_measures
import numpy as np
import pyarrow as pa

from tasks.evaluation.metrics import MEASURES, NAMES, doc_rankings, retrieval_metrics
from tasks.tuning.pairs import MAX_WORDS, MIN_CONTEXT_WORDS, MIN_WORDS, heading_pairs, sentences

Encode = Callable[[list[str], bool], np.ndarray]  # (texts, as_queries) -> unit vectors
Qrels = dict[str, dict[str, int]]
Rankings = dict[str, dict[str, float]]  # query id -> {doc_id: score}
DEPTH = 100  # chunks searched per probe before ranking documents
REPORTED = ("recall_at_1", "recall_at_10", "ndcg_at_10")
RESAMPLES = 2000  # bootstrap resamples of the paired gains
LABELED = "labeled"


@dataclass(frozen=True)
class Labeled:
    """Labelled gate queries: texts, relevant documents, and documents of their own that
    the gate's corpus must hold (a JSONL pair's positive has no document in the corpus)."""

    queries: dict[str, str]
    qrels: Qrels
    docs: dict[str, str] = field(default_factory=dict)  # doc id -> text


@dataclass(frozen=True)
class GateSet:
    """Probes and the corpus they are searched in (chunk texts with probe text removed)."""

    queries: dict[str, str]  # query id -> text
    qrels: Qrels  # query id -> {doc_id: relevance}
    kinds: dict[str, str]  # query id -> cloze | heading | labeled
    texts: list[str]
    docs: list[str]


def _chunk_probe(text: str, rng: np.random.Generator) -> tuple[str, str] | None:
    """(probe text, kind) from one chunk: a heading line or a query-like sentence that
    leaves enough of the chunk behind (a coin picks when it has both), or None."""
    heads = [h for h, _ in heading_pairs(text, None)]
    spans = [text[a:b] for a, b in sentences(text)
             if MIN_WORDS <= len(text[a:b].split()) <= MAX_WORDS
             and len(text.split()) - len(text[a:b].split()) >= MIN_CONTEXT_WORDS]
    if heads and (not spans or rng.random() < 0.5):
        return heads[int(rng.integers(len(heads)))], "heading"
    if spans:
        return spans[int(rng.integers(len(spans)))], "cloze"
    return None


def _probes(rows: list[dict], held: set[str], n_queries: int, seed: int
            ) -> list[tuple[str, str, str]]:
    """(doc_id, probe text, kind): one probe per held-out chunk that gives one, at most
    `n_queries` of them (a seeded sample, in chunk order)."""
    rng = np.random.default_rng(seed)
    found = []
    for r in rows:
        if r["doc_id"] in held and (probe := _chunk_probe(r["text"] or "", rng)) is not None:
            found.append((r["doc_id"], *probe))
    if len(found) > n_queries:
        found = [found[i] for i in np.sort(rng.choice(len(found), n_queries, replace=False))]
    return found


def _corpus(rows: list[dict], held: set[str], max_chunks: int, seed: int) -> list[dict]:
    """Every held-out chunk, then a seeded sample of the others, `max_chunks` in all."""
    inside = [r for r in rows if r["doc_id"] in held]
    others = [r for r in rows if r["doc_id"] not in held]
    room = max(0, max_chunks - len(inside))
    if room < len(others):
        rng = np.random.default_rng(seed + 1)
        others = [others[i] for i in np.sort(rng.choice(len(others), room, replace=False))]
    return inside + others


def _without(text: str, removed: list[str]) -> str:
    for probe in removed:
        text = text.replace(probe, " ")
    return text


def gate_set(chunks: pa.Table, held: set[str], n_queries: int, max_chunks: int, seed: int,
             labeled: Labeled | None = None) -> GateSet:
    """Probes from the held-out chunks (at most `n_queries`), plus the labelled queries
    whose relevant documents are all held out (or are their own); the corpus: the held-out
    chunks, every probe's text removed from its document, then a seeded sample of the
    others (`max_chunks` in all), then the labelled queries' own documents."""
    rows = chunks.select(["chunk_id", "doc_id", "text"]).to_pylist()
    queries, qrels, kinds, removed = {}, {}, {}, {}
    for doc, text, kind in _probes(rows, held, n_queries, seed):
        qid = f"probe-{len(queries)}"
        queries[qid], qrels[qid], kinds[qid] = text, {doc: 1}, kind
        removed.setdefault(doc, []).append(text)
    extra = labeled.docs if labeled else {}
    for qid, rel in (labeled.qrels.items() if labeled else ()):
        if rel and set(rel) <= held | set(extra):
            queries[qid], qrels[qid], kinds[qid] = labeled.queries[qid], rel, LABELED
    own = {t.strip() for t in extra.values()}  # a positive's chunk twin would tie with it
    corpus = [r for r in _corpus(rows, held, max_chunks, seed)
              if (r["text"] or "").strip() not in own]
    texts = [_without(r["text"] or "", removed.get(r["doc_id"], [])) for r in corpus]
    return GateSet(queries, qrels, kinds, texts + list(extra.values()),
                   [r["doc_id"] for r in corpus] + list(extra))


def rank_documents(encode: Encode, gate: GateSet) -> Rankings:
    """Each gate query's documents, ranked by their best chunk (exact search)."""
    if not gate.queries:
        return {}
    qids = list(gate.queries)
    xb = encode(gate.texts, False)
    index = faiss.IndexFlatIP(xb.shape[1])
    index.add(np.ascontiguousarray(xb, dtype="float32"))
    xq = encode([gate.queries[q] for q in qids], True)
    scores, ids = index.search(np.ascontiguousarray(xq, dtype="float32"),
                               min(DEPTH, index.ntotal))
    return dict(zip(qids, doc_rankings(scores, ids, [[d] for d in gate.docs]), strict=True))


def groups(gate: GateSet) -> dict[str, list[str]]:
    """Query ids by kind, and `all` (the probes; labelled queries count on their own)."""
    out = {"all": [q for q in gate.queries if gate.kinds[q] != LABELED]}
    for q in gate.queries:
        out.setdefault(gate.kinds[q], []).append(q)
    return {k: v for k, v in out.items() if v}


def score_rankings(gate: GateSet, ranked: Rankings) -> dict[str, dict[str, float]]:
    """recall@1/@10 and nDCG@10 of the documents found, per query kind and `all`."""
    out = {}
    for name, members in groups(gate).items():
        m = retrieval_metrics({q: gate.qrels[q] for q in members},
                              {q: ranked[q] for q in members})
        out[name] = {k: m[k] for k in REPORTED} | {"queries": len(members)}
    return out


def score_model(encode: Encode, gate: GateSet) -> dict[str, dict[str, float]]:
    """`score_rankings` of the model behind `encode`."""
    return score_rankings(gate, rank_documents(encode, gate))


def per_query(gate: GateSet, ranked: Rankings, metric: str, qids: list[str]) -> np.ndarray:
    """`metric` of each query in `qids`, in that order (0 where nothing relevant is found)."""
    measure = next(m for m in MEASURES if NAMES[str(m)] == metric)
    qrels = [ir_measures.Qrel(q, d, g) for q in qids for d, g in gate.qrels[q].items()]
    run = [ir_measures.ScoredDoc(q, d, s) for q in qids for d, s in ranked[q].items()]
    got = {r.query_id: r.value for r in ir_measures.iter_calc([measure], qrels, run)}
    return np.array([got.get(q, 0.0) for q in qids], dtype="float64")


def paired_test(base: np.ndarray, tuned: np.ndarray, confidence: float, seed: int
                ) -> dict[str, float | int]:
    """The mean per-query gain (tuned - base) with a two-sided `confidence` interval from a
    seeded bootstrap of the queries, and the sign counts."""
    gain = tuned - base
    rng = np.random.default_rng(seed)
    means = gain[rng.integers(0, len(gain), (RESAMPLES, len(gain)))].mean(axis=1)
    tail = (1 - confidence) / 2
    lower, upper = np.quantile(means, [tail, 1 - tail])
    return {"test": "paired bootstrap", "resamples": RESAMPLES, "confidence": confidence,
            "n": len(gain), "mean_gain": round(float(gain.mean()), 6),
            "lower": round(float(lower), 6), "upper": round(float(upper), 6),
            "wins": int((gain > 0).sum()), "losses": int((gain < 0).sum()),
            "ties": int((gain == 0).sum())}


def verdict(test: dict, min_gain: float, metric: str, group: str) -> dict[str, object]:
    """Use the tuned model only if the gain's lower confidence bound is above `min_gain`
    (a negative `min_gain` lets a no better model through, for study)."""
    use = "tuned" if test["lower"] > min_gain else "base"
    says = "above" if use == "tuned" else "not above"
    return {"use": use, "group": group, "metric": metric, "min_gain": min_gain, **test,
            "reason": f"{group} held-out queries (n={test['n']}): tuned - base {metric} "
                      f"{test['mean_gain']:+.4f}, {test['confidence']:.0%} interval "
                      f"[{test['lower']:+.4f}, {test['upper']:+.4f}], lower bound {says} "
                      f"min_gain {min_gain}"}


def decide(gate: GateSet, base: Rankings, tuned: Rankings, metric: str, min_gain: float,
           confidence: float, seed: int) -> dict[str, object]:
    """The gate's decision over the labelled queries when there are some (labels outrank
    probes), else over the probes: `verdict` of their `paired_test`."""
    found = groups(gate)
    group = LABELED if LABELED in found else "all"
    if group not in found:
        return {"use": "base", "group": group, "metric": metric,
                "reason": "no held-out probe to judge the tuned model on"}
    qids = found[group]
    test = paired_test(per_query(gate, base, metric, qids),
                       per_query(gate, tuned, metric, qids), confidence, seed)
    return verdict(test, min_gain, metric, group)
