"""Drawing label-free probes from the corpus's chunks, for the search choice at index build.

Probes are query-like texts drawn from a seeded sample of the corpus's documents, each aimed
at its own document: a question-shaped sentence where the document has one, a heading or
title, or a plain sentence (inverse cloze), in turn, with the text of each chunk holding it
taken out (`Probe.masked`). They are drawn from the chunk stage's table, every chunk before
dedup (`drawn_probes`): a pure function of that table, the count and the seed. So the encode
stage, which has the model loaded, draws the same probes, embeds their texts into the
vector cache ahead (`probe_texts`) and keeps the probes themselves there
(tasks/query/probe_store.py); the index stage reads both there and keeps the probes dedup
left usable (tasks/query/fusion_choice.py).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from tasks.documents.context import SEPARATOR, with_context
from tasks.query.weights import identifier_share

KINDS = ("question", "heading", "cloze")
MIN_WORDS, MAX_WORDS = 4, 40  # a probe sentence's length: query-like, not a passage
# chunks a probe may be taken out of: each is encoded again, and a title in the context of
# every chunk of a long document would cost as many encodes as it has chunks
MAX_MASKED = 4
# Probes need query-sized pieces, not exact sentence boundaries: a light split (no spaCy to
# load at index build) after sentence-final marks followed by a space and a capital or digit.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(]?[A-Z0-9])")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$")
# A line of its own in clean text (HTML headings become such lines): capitalised, 2+ words,
# no sentence or clause end.
_HEADING_LINE = re.compile(r"^[A-Z][^.!?:;,]*\s\S*[^.!?:;,\s]$")


@dataclass(frozen=True)
class Probe:
    """A probe query, the document it is aimed at, and the text of each of that document's
    chunks holding it (by chunk_id as drawn, by index row once usable) with the probe text
    taken out."""

    query: str
    doc_id: str
    kind: str
    masked: dict[Any, str] = field(default_factory=dict)
    text: str = ""  # as found in the document (a markdown heading with its marks)


def doc_pieces(texts: list[str], title: str | None) -> dict[str, list[str]]:
    """A document's probe texts by kind: question-shaped sentences, headings (the title when
    it has 2+ words or is an identifier, markdown heading lines and heading-like lines:
    capitalised, 2-10 words, no final punctuation, a line of their own), and other
    sentences of `MIN_WORDS`..`MAX_WORDS` words."""
    out: dict[str, list[str]] = {k: [] for k in KINDS}
    if title and (len(title.split()) >= 2 or identifier_share(title) > 0):
        out["heading"].append(title.strip())
    for text in texts:
        own_lines: set[str] | None = None  # the text's lines, for a heading-like line
        for piece in _SENTENCE_END.split(text):
            for raw in piece.split("\n") if "\n" in piece else (piece,):
                line = raw.strip()
                if line[:1] == "#":  # a markdown heading, or nothing
                    heading = _HEADING.match(line)
                    if heading and len(heading.group(1).split()) >= 2:
                        out["heading"].append(line)
                    continue
                words = len(line.split())
                # the cheap tests first: most lines are no heading
                if line[:1].isupper() and words <= 10 and _HEADING_LINE.match(line):
                    own_lines = own_lines or {ln.strip() for ln in text.split("\n")}
                    if line in own_lines:
                        out["heading"].append(line)
                        continue
                if MIN_WORDS <= words <= MAX_WORDS:
                    out["question" if line.endswith("?") else "cloze"].append(line)
    return {k: list(dict.fromkeys(v)) for k, v in out.items()}


def probe_for(doc_id: str, rows: list[Any], texts: list[str], title: str | None,
              turn: int, rng: np.random.Generator, elsewhere: tuple[str, ...] = (),
              contexts: list[str | None] | None = None) -> Probe | None:
    """One probe of the document from its chunks `texts` (index `rows`; kind
    `KINDS[turn % 3]` where it has one, else the next kind it has), taken out of each chunk
    holding it (once: other mentions stay, as they would in a real document) and out of
    each chunk's context (`contexts`: a heading or title probe is one of its pieces); the
    masked texts are those the chunks are indexed as (`with_context`). None when it has
    none, a chunk's text would be left empty, the text is in more than `MAX_MASKED` chunks,
    or it is also in `elsewhere` (chunks of the document that dedup merged, whose twins
    cannot be masked)."""
    pieces = doc_pieces(texts, title)
    for kind in KINDS[turn % 3:] + KINDS[:turn % 3]:
        if pieces[kind]:
            text = pieces[kind][int(rng.integers(len(pieces[kind])))]
            query = _HEADING.sub(r"\1", text) if kind == "heading" else text
            masked = _masked(rows, texts, contexts, text, query)
            if masked is not None and not any(text in e for e in elsewhere):
                return Probe(query, doc_id, kind, masked, text)
    return None


def _masked(rows: list[Any], texts: list[str], contexts: list[str | None] | None,
            text: str, query: str) -> dict[Any, str] | None:
    """Row -> the chunk's indexed text with `text` taken out of it (once) and `query` out of
    its context; None when a chunk's text would be left empty or more than `MAX_MASKED`
    chunks change."""
    masked = {}
    for r, t, c in zip(rows, texts, contexts or [None] * len(rows), strict=True):
        kept, ctx = t.replace(text, " ", 1) if text in t else t, _without(c, query)
        if not kept.strip():
            return None
        if kept != t or ctx != c:
            masked[r] = with_context(ctx, kept)
    return masked if len(masked) <= MAX_MASKED else None


def _without(context: str | None, piece: str) -> str | None:
    """`context` without the piece (title or heading) equal to `piece`, if it has one."""
    if not context:
        return context
    parts = context.split(SEPARATOR)
    rest = [p for p in parts if p != " ".join(piece.split())]
    return context if len(rest) == len(parts) else SEPARATOR.join(rest) or None


DRAWN = ("chunk_id", "doc_id", "title", "text", "context")  # the chunk table's columns read
# Probes the encode stage embeds ahead, per probe the search choice keeps: dedup and
# boilerplate leave part of those drawn unusable (measured: the probes kept came from the
# first 182 to 401 drawn on the Debian and Python corpora of docs/search-quality.md, 531 on
# a generated one with near duplicates, 1,616 on the families corpus, made of shared text);
# the index stage embeds what it takes beyond them itself.
AHEAD_PER_PROBE = 3


def drawn_probes(chunks: pa.Table, seed: int, resume: dict[str, Any] | None = None
                 ) -> Iterator[Probe]:
    """Probes (`probe_for`), one per document in a seeded order, from the chunk stage's
    table (`DRAWN` columns, every chunk in corpus order), each chunk's masked text keyed by
    its chunk_id; a title only where no other document has it. Lazily: the first k are the
    same however many are taken; from `resume` (a state `drawing` gave), those after it."""
    return (probe for probe, _ in drawing(chunks, seed, resume))


def drawing(chunks: pa.Table, seed: int, resume: dict[str, Any] | None = None
            ) -> Iterator[tuple[Probe, dict[str, Any]]]:
    """`drawn_probes`, each probe with the state to resume the drawing after it (JSON: the
    next document's place in the seeded order, the turn, the generator's state)."""
    doc_of, title_of, ids = (chunks.column(c).to_pylist() for c in ("doc_id", "title",
                                                                  "chunk_id"))
    text = chunks.column("text")
    context = chunks.column("context") if "context" in chunks.column_names else None
    rows_of: dict[str, list[int]] = {}
    for row, doc in enumerate(doc_of):
        rows_of.setdefault(doc, []).append(row)
    titles = Counter(title_of[rows[0]] for rows in rows_of.values())
    docs, rng, turn, start = sorted(rows_of), np.random.default_rng(seed), 0, 0
    order = rng.permutation(len(docs))
    if resume is not None:
        start, turn, rng.bit_generator.state = resume["next"], resume["turn"], resume["rng"]
    for at, i in enumerate(order[start:].tolist(), start):  # the documents drawn only
        rows, title = rows_of[docs[i]], title_of[rows_of[docs[i]][0]]
        probe = probe_for(docs[i], [ids[r] for r in rows], [text[r].as_py() for r in rows],
                          title if titles[title] == 1 else None, turn, rng, (),
                          [None if context is None else context[r].as_py() for r in rows])
        if probe is not None:
            turn += 1
            yield probe, {"next": at + 1, "turn": turn, "rng": rng.bit_generator.state}


def probe_texts(drawn: list[Probe]) -> tuple[list[str], list[str]]:
    """What the search choice embeds of the probes `drawn` (the first of `drawn_probes`):
    (queries, masked chunk texts, as passages are embedded)."""
    return [p.query for p in drawn], [t for p in drawn for t in p.masked.values()]
