"""Choosing the search at index build, without labels: dense, lexical, or a fusion.

Probes are query-like texts drawn from a seeded sample of the corpus's documents, each aimed
at its own document: a question-shaped sentence where the document has one, a heading or
title, or a plain sentence (inverse cloze), in turn (tasks/query/probe_drawing.py: drawn
from every chunk before dedup, so that the encode stage embeds their texts ahead; the first
that dedup left usable are kept, `usable_probes`). A probe copied out of a chunk is a
perfect BM25 match (and a near one for the dense side) for that chunk, so it is taken OUT of
its document first: every chunk of the document holding the probe text is scored as if that
occurrence were not there (other mentions of its words stay, as in a real document). No
second index is built: the target chunks' dense scores come from their masked text encoded
as passages are, their BM25 scores from the masked tokens under the index's own idf and
length normalisation (`LexicalIndex.masked_score`); every other chunk keeps the score the
real index gives it. Probe texts come only from chunks dedup left alone, and never from a
text a merged duplicate also holds (its twin elsewhere cannot be masked).

Each candidate (dense, lexical, reciprocal rank fusion, convex fusion at each of
`search.alphas`) ranks the probes through the query side's own fusion code; the probes are
split in two halves by a seeded shuffle. The best fusion and the best single side are picked
on the first half and judged on both: the side alone is used where it beats the fusion by
`search.fusion_margin` in nDCG@10, else the fusion is (`pick` says why this way round).
Deterministic: seeded samples, no clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from itertools import islice
from typing import Any

import numpy as np
import pyarrow as pa

from tasks.core.config import SearchConfig
from tasks.documents.context import contextual_texts
from tasks.encoders.loading import release_local_encoders
from tasks.query.fusion import Ranked, SearchPlan, fuse_plan
from tasks.query.lexical import tokenize
from tasks.query.probe_drawing import KINDS, Probe
from tasks.query.search import IndexFolder, Sides

log = logging.getLogger(__name__)

MIN_PER_HALF = 10  # fewer probes than this in a half: too few to choose on
DEPTH = 10


def usable_probes(folder: IndexFolder, drawn: Iterator[Probe], n: int,
                  member_text: dict[str, str] | None, row_docs: list[set[str]]
                  ) -> list[Probe]:
    """The first `n` probes drawn from every chunk (`drawn_probes`, taken as far as needed)
    that dedup left usable, their masked texts keyed by index row: each chunk holding the
    probe text is indexed as itself (one standing for a duplicate group only when its
    members' texts, `member_text`, are known, to keep the probe text out of them); the text
    is in no chunk standing for one of the document's merged chunks, no group member of its
    chunks, and (a boilerplate line aims at no document) none of another document's top
    BM25 hits."""
    row_of = {c: r for r, c in enumerate(folder.chunks.column("chunk_id").to_pylist())}
    own_of: dict[str, set[int]] = {}  # each document's own rows
    for r, doc in enumerate(folder.chunks.column("doc_id").to_pylist()):
        own_of.setdefault(doc, set()).add(r)
    rows_of: dict[str, set[int]] = {}  # and the rows standing for its merged chunks
    for r, docs in enumerate(row_docs):
        for d in docs:
            rows_of.setdefault(d, set()).add(r)
    usable = (u for u in (_usable(folder, p, row_of, (own_of, rows_of), member_text)
                          for p in drawn) if u is not None)
    out: list[Probe] = []
    while len(out) < n:  # a few more than needed checked for boilerplate at a time
        batch = list(islice(usable, n - len(out) + n // 8 + 4))
        if not batch:
            break
        out += _not_boilerplate(folder, batch, row_docs)
    return out[:n]


def _usable(folder: IndexFolder, p: Probe, row_of: dict[str, int],
            docs_rows: tuple[dict[str, set[int]], dict[str, set[int]]],
            member_text: dict[str, str] | None) -> Probe | None:
    """`p` with its masked texts keyed by index row where dedup left it usable, else None
    (`usable_probes` says when); `docs_rows`: each document's own rows, and those with the
    rows standing for its merged chunks."""
    own_of, rows_of = docs_rows
    own = {r for r in own_of.get(p.doc_id, ())
           if member_text is not None or not folder.members[r]}
    rows = [row_of.get(c) for c in p.masked]
    if not own or any(r is None or r not in own for r in rows):
        return None
    text = folder.chunks.column("text")
    elsewhere = [text[r].as_py() for r in sorted(rows_of[p.doc_id] - own)] + [
        member_text[m["chunk_id"]] for r in sorted(own) for m in folder.members[r]]
    if any(p.text in e for e in elsewhere):
        return None
    return replace(p, masked=dict(zip(rows, p.masked.values(), strict=True)))


def _not_boilerplate(folder: IndexFolder, batch: list[Probe], row_docs: list[set[str]]
                     ) -> list[Probe]:
    """The probes of `batch` whose text no other document holds word for word: found among
    the top BM25 hits of the probe text itself."""
    text = folder.chunks.column("text")
    _, rows = folder.lexical.search([p.text for p in batch], 20)
    return [p for p, hits in zip(batch, rows.tolist(), strict=True)
            if not any(r >= 0 and p.doc_id not in row_docs[r] and p.text in text[r].as_py()
                       for r in hits)]


def _row_docs(folder: IndexFolder) -> list[set[str]]:
    """Per index row, the documents it stands for: its own and its group members'."""
    return [{d} | {m["doc_id"] for m in ms} for d, ms in zip(
        folder.chunks.column("doc_id").to_pylist(), folder.members, strict=True)]


def _replace(scores: np.ndarray, rows: np.ndarray, masked: dict[int, Any],
             new: dict[int, float]) -> None:
    """Take the `masked` rows out of one candidate list (best first) and put them back with
    their scores `new` (a row absent from `new` no longer matches), in place: the list a
    second index over the masked texts would give (ordered by score, then row)."""
    out = np.fromiter(masked, dtype="int64", count=len(masked))  # a few rows (MAX_MASKED)
    keep = (rows >= 0) & ~(rows[:, None] == out[None, :]).any(axis=1)
    s = np.concatenate([scores[keep].astype("float64"), np.fromiter(new.values(), "float64")])
    r = np.concatenate([rows[keep], np.fromiter(new, dtype="int64", count=len(new))])
    order = np.lexsort((r, -s))[:len(rows)]
    scores[:] = 0.0
    rows[:] = -1
    scores[:len(order)] = s[order]
    rows[:len(order)] = r[order]


def masked_dense(folder: IndexFolder, probes: list[Probe], xq: np.ndarray, wide: int
                 ) -> Ranked:
    """Dense candidates of the probes with each target chunk scored on its masked text."""
    scores, rows = folder.search_vectors(xq, wide)
    scores, rows = scores.astype("float32").copy(), rows.copy()
    texts = [t for p in probes for t in p.masked.values()]
    xm = folder.encode_passages(texts)
    at = 0
    for q, p in enumerate(probes):
        new = {r: float(xm[at + j] @ xq[q]) for j, r in enumerate(p.masked)}
        at += len(p.masked)
        _replace(scores[q], rows[q], p.masked, new)
    return scores, rows


def masked_lexical(folder: IndexFolder, probes: list[Probe], wide: int) -> Ranked:
    """BM25 candidates of the probes with each target chunk scored on its masked tokens
    (row r's own lexical document is r; a group's members, which do not hold the probe
    text, keep their scores: the row scores the best of them)."""
    lex = folder.lexical
    scores, rows = lex.search([p.query for p in probes], wide)
    cfg = lex.cfg
    masked_rows = sorted({r for p in probes for r in p.masked})  # as the lexical index holds them
    texts = dict(zip(masked_rows, contextual_texts(folder.chunks.take(
        pa.array(masked_rows, pa.int64()))), strict=True))
    for q, p in enumerate(probes):
        tokens = tokenize(p.query, cfg.stopwords, cfg.stemmer)
        new = {}
        for r, text in p.masked.items():
            s = lex.masked_score(tokens, r, tokenize(texts[r], cfg.stopwords, cfg.stemmer),
                                 tokenize(text, cfg.stopwords, cfg.stemmer))
            if folder.members[r]:
                s = max(s, _member_score(lex, tokens, r))
            if s > 0:
                new[r] = s
        _replace(scores[q], rows[q], p.masked, new)
    return scores, rows


def _member_score(lex: Any, tokens: list[str], row: int) -> float:
    """The best BM25 score of `tokens` over the lexical documents of `row`'s group members."""
    known = [t for t in tokens if t in lex.index.vocab_dict]
    docs = np.flatnonzero(lex.row_of == row)
    docs = docs[docs != row]
    if not known or not len(docs):
        return 0.0
    return float(lex.index.get_scores(known)[docs].max())


def candidate_plans(cfg: SearchConfig) -> list[tuple[str, SearchPlan]]:
    """The searches the probes compare: each side alone, reciprocal rank fusion, and convex
    fusion at each of `cfg.alphas` (weighted per query when `cfg.query_weighting`)."""
    w = cfg.query_weighting
    total = cfg.dense_weight + cfg.lexical_weight
    plans = [("dense", SearchPlan("dense")), ("lexical", SearchPlan("lexical")),
             ("rrf", SearchPlan("hybrid", "rrf", cfg.dense_weight / total if total else 0.5,
                                w))]
    plans += [(f"convex@{a:g}", SearchPlan("hybrid", "convex", a, w)) for a in cfg.alphas]
    return plans


def doc_ranks(rows: np.ndarray, row_docs: list[set[str]], probes: list[Probe]
              ) -> np.ndarray:
    """Per probe, the rank (from 1) of the first row in `rows` standing for its document
    (its own, or a chunk dedup merged into it, as search expands groups); 0 if absent."""
    out = np.zeros(len(probes), dtype="int64")
    for q, p in enumerate(probes):
        for rank, r in enumerate(rows[q, :DEPTH].tolist(), 1):
            if r >= 0 and p.doc_id in row_docs[r]:
                out[q] = rank
                break
    return out


def probe_metrics(ranks: np.ndarray) -> dict[str, float]:
    """nDCG@10 (one relevant document: 1 / log2(1 + rank)), hit@1 and hit@10."""
    if not len(ranks):
        return {"ndcg_at_10": 0.0, "hit_at_1": 0.0, "hit_at_10": 0.0}
    gain = np.where(ranks > 0, 1.0 / np.log2(1.0 + np.maximum(ranks, 1)), 0.0)
    return {"ndcg_at_10": round(float(gain.mean()), 4),
            "hit_at_1": round(float((ranks == 1).mean()), 4),
            "hit_at_10": round(float((ranks > 0).mean()), 4)}


def rank_candidates(folder: IndexFolder, probes: list[Probe], dense: Ranked,
                    lexical: Ranked, row_docs: list[set[str]]) -> dict[str, np.ndarray]:
    """Each candidate plan's document rank per probe, from the masked candidate lists
    (`row_docs`: `_row_docs` of the folder)."""
    queries, sides = [p.query for p in probes], Sides(dense, lexical)
    out = {}
    for name, plan in candidate_plans(folder.search):
        if plan.mode == "dense":
            rows = dense[1]
        elif plan.mode == "lexical":
            rows = lexical[1]
        else:
            alphas = folder.plan_alphas(plan, queries, lexical[0], sides)
            rows = fuse_plan(plan, dense, lexical, alphas, folder.search, DEPTH)[1]
        out[name] = doc_ranks(rows, row_docs, probes)
    return out


def pick(table: dict[str, dict[str, dict[str, float]]], margin: float) -> tuple[str, str]:
    """(winner, why) from each candidate's metrics on the `selection` and `held_out` halves:
    the best single side and the best fusion are picked on the selection half, then judged
    on both halves (the mean of their nDCG@10): that side alone where it beats the fusion
    by `margin`, else the fusion.

    Why this way round: probe differences come out compressed against real queries' (on
    the families corpus a fusion 2.7 nDCG points behind BM25 on probes was 9 hit@10 points
    behind on the real queries; on the man pages, even on probes, it was 4 points ahead),
    and a side alone is what loses most where the other side holds the answer."""
    def ndcg(name: str, half: str) -> float:
        return table[name][half]["ndcg_at_10"]

    def both(name: str) -> float:
        return (ndcg(name, "selection") + ndcg(name, "held_out")) / 2

    single = max(("dense", "lexical"), key=lambda n: (ndcg(n, "selection"), n == "dense"))
    fused = [n for n in table if n not in ("dense", "lexical")]
    best = max(fused, key=lambda n: ndcg(n, "selection"))  # the first of equals: stable
    lead = both(single) - both(best)
    facts = (f"{best} nDCG@10 {both(best):.4f} vs {single} {both(single):.4f} on the probes "
             f"(selection {ndcg(best, 'selection'):.4f} vs {ndcg(single, 'selection'):.4f}, "
             f"held-out {ndcg(best, 'held_out'):.4f} vs {ndcg(single, 'held_out'):.4f})")
    if lead >= margin:
        return single, f"{facts}: {single} alone (ahead by {lead:.4f} >= margin {margin})"
    return best, f"{facts}: fused ({single} alone not ahead by the margin {margin})"


def _halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of `n` probes into a selection half and a held-out half."""
    order = np.random.default_rng(seed + 1).permutation(n)
    return np.sort(order[: (n + 1) // 2]), np.sort(order[(n + 1) // 2:])


def choose_search(folder: IndexFolder, seed: int, drawn: Iterator[Probe],
                  dropped: pa.Table | None = None) -> dict[str, Any] | None:
    """The search the folder answers with under `search.fusion: auto` (mode, fusion,
    alpha, weighting), with every candidate's probe metrics and why the winner won; None
    when the params fix the search (mode not hybrid, or fusion not auto) or there is no
    lexical index. `drawn`: the probes as `drawn_probes` gives them from the chunk stage's
    table, taken within the time the card records (`probe_store.probes_for_choice`: those
    encode kept, then drawn); `dropped` (dedup's dropped rows, with their text) lets them
    come from chunks standing for a duplicate group too."""
    cfg = folder.search
    if cfg.mode != "hybrid" or cfg.fusion != "auto" or folder.lexical is None:
        return None
    started = time.perf_counter()
    member_text = None if dropped is None else dict(zip(
        dropped.column("dropped_chunk_id").to_pylist(), dropped.column("text").to_pylist(),
        strict=True))
    row_docs = _row_docs(folder)
    probes = usable_probes(folder, drawn, cfg.probes, member_text, row_docs)
    sel, held = _halves(len(probes), seed)
    if len(held) < MIN_PER_HALF:
        return {"mode": "hybrid", "fusion": "rrf", "alpha": None, "probes": len(probes),
                "reason": f"{len(probes)} probes: too few to choose on; reciprocal rank "
                "fusion, the fixed default", "candidates": {}}
    wide = max(DEPTH, cfg.candidates)
    dense = masked_dense(folder, probes, folder.encode_queries([p.query for p in probes]), wide)
    release_local_encoders()  # every text is embedded: the model goes before the rankings
    ranks = rank_candidates(folder, probes, dense, masked_lexical(folder, probes, wide),
                            row_docs)
    table = {name: {"selection": probe_metrics(r[sel]), "held_out": probe_metrics(r[held]),
                    "by_kind": {k: probe_metrics(r[[i for i, p in enumerate(probes)
                                                    if p.kind == k]])["hit_at_10"]
                                for k in KINDS}}
             for name, r in ranks.items()}
    return choice_record(cfg, table, "probes") | {
        "probes": len(probes), "probe_kinds": {k: sum(p.kind == k for p in probes)
                                               for k in KINDS},
        "probe_seconds": round(time.perf_counter() - started, 3)}


def choice_record(cfg: SearchConfig, table: dict[str, dict[str, Any]], basis: str
                  ) -> dict[str, Any]:
    """What the index card keeps of a choice made on `basis` (probes or labelled queries):
    the winner (`pick`) and the search it means, with every candidate's metrics."""
    winner, why = pick(table, cfg.fusion_margin)
    plans = dict(candidate_plans(cfg))
    fused = max((n for n in table if plans[n].mode == "hybrid"),
                key=lambda n: table[n]["selection"]["ndcg_at_10"])
    log.info("search choice on %s: %s (%s)", basis, winner, why)
    return {"mode": plans[winner].mode, "fusion": plans[fused].fusion,
            "alpha": plans[fused].alpha, "weighting": cfg.query_weighting, "basis": basis,
            "winner": winner, "reason": why, "candidates": table}
