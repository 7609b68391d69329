"""Training pairs mined from the chunk table without labels, after a seeded document split.

Kinds: `cloze` (a sentence -> its chunk with the sentence removed, sometimes kept: inverse
cloze), `heading` (a heading line or the document title -> the section under it) and
`neighbour` (a chunk -> the next chunk of its document). Documents are split before any
pair is made, so a held-out document never gives a training pair.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from tasks.documents.sentences import sentence_starts

MIN_WORDS, MAX_WORDS = 5, 40  # a query-like sentence: not a fragment, not a paragraph
HEADING_MAX_WORDS = 12
MIN_CONTEXT_WORDS = 12  # a positive must say something once its sentence is gone
_MD_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+")
_CODE_MARKS = re.compile(r"[=(){}\[\]<>;|`$\\]")
PAIR_FIELDS = (("anchor", pa.string()), ("positive", pa.string()), ("kind", pa.string()),
               ("doc_id", pa.string()), ("chunk_id", pa.string()))
PAIRS_SCHEMA = pa.schema(PAIR_FIELDS)


def held_out(doc_id: str, share: float, seed: int) -> bool:
    """Whether `doc_id` is held out: a hash of (seed, doc_id) below `share`, so a document
    stays on its side when others are added or removed."""
    digest = hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def split_documents(doc_ids: list[str], share: float, seed: int) -> tuple[set[str], set[str]]:
    """(training documents, held-out documents)."""
    out = {d for d in set(doc_ids) if held_out(d, share, seed)}
    return set(doc_ids) - out, out


def sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of `text`, whitespace trimmed."""
    starts = [*sentence_starts(text), len(text)]
    spans = []
    for a, b in zip(starts, starts[1:], strict=False):
        piece = text[a:b]
        lead = len(piece) - len(piece.lstrip())
        if piece.strip():
            spans.append((a + lead, a + len(piece.rstrip())))
    return spans


def cloze_pair(text: str, rng: np.random.Generator, keep: float) -> tuple[str, str] | None:
    """(a sentence, the chunk without it, or with it at rate `keep`), or None when the chunk
    has no query-like sentence and enough else."""
    spans = [(a, b) for a, b in sentences(text)
             if MIN_WORDS <= len(text[a:b].split()) <= MAX_WORDS]
    if len(sentences(text)) < 2 or not spans:
        return None
    a, b = spans[int(rng.integers(len(spans)))]
    rest = " ".join((text[:a].rstrip(), text[b:].lstrip())).strip()
    if len(rest.split()) < MIN_CONTEXT_WORDS:
        return None
    # kept now and then, so the model also learns that the sentence itself is a match
    return text[a:b], text.strip() if rng.random() < keep else rest


def heading_of(line: str, next_line: str | None) -> str | None:
    """The heading a line is (markdown `#` stripped), or None: a markdown heading, or a short
    line that starts with a capital, holds no code marks, ends no sentence and stands apart
    (a blank line after it)."""
    text = _MD_HEADING.sub("", line).strip()
    words = text.split()
    if not 2 <= len(words) <= HEADING_MAX_WORDS or text[-1] in ".!?;:,":
        return None
    if _MD_HEADING.match(line):
        return text
    if not text[0].isupper() or _CODE_MARKS.search(text) or next_line is None \
            or next_line.strip():
        return None
    return text


def heading_pairs(text: str, title: str | None) -> list[tuple[str, str]]:
    """(heading, its section) for each heading line followed by a section in `text`, and
    (title, the text) for a document title that is not already the first line."""
    out: list[tuple[str, str]] = []
    lines = text.split("\n")
    marks = [(i, h) for i, line in enumerate(lines)
             if (h := heading_of(line, lines[i + 1] if i + 1 < len(lines) else None))]
    for n, (i, heading) in enumerate(marks):
        end = marks[n + 1][0] if n + 1 < len(marks) else len(lines)
        section = "\n".join(lines[i + 1:end]).strip()
        if len(section.split()) >= MIN_CONTEXT_WORDS:
            out.append((heading, section))
    if title and len(title.split()) >= 2 and not text.lstrip().startswith(title.strip()):
        out.append((title.strip(), text.strip()))
    return out


@dataclass(frozen=True)
class MiningSettings:
    """What pair mining needs of `FinetuneConfig`."""

    kinds: tuple[str, ...]
    cloze_keep: float
    max_pairs: int
    seed: int


def _chunk_pairs(rows: list[dict], s: MiningSettings, rng: np.random.Generator
                 ) -> Iterator[tuple[str, str, str, dict]]:
    """(anchor, positive, kind, positive's row) of every kind asked for, chunk by chunk."""
    for i, row in enumerate(rows):
        text = row["text"] or ""
        if "cloze" in s.kinds and (pair := cloze_pair(text, rng, s.cloze_keep)):
            yield (*pair, "cloze", row)
        if "heading" in s.kinds:
            title = row["title"] if row["chunk_index"] == 0 else None
            for heading, section in heading_pairs(text, title):
                yield heading, section, "heading", row
        nxt = rows[i + 1] if i + 1 < len(rows) else None
        if "neighbour" in s.kinds and nxt is not None and nxt["doc_id"] == row["doc_id"]:
            yield text, nxt["text"] or "", "neighbour", nxt


def mine_pairs(chunks: pa.Table, docs: set[str], s: MiningSettings) -> pa.Table:
    """Pairs (anchor, positive, kind, doc_id, chunk_id) from the chunks of `docs`, at most
    `s.max_pairs` (a seeded sample, in chunk order).

    Args:
        chunks: the chunk table (chunk_id, doc_id, chunk_index, title, text) in corpus
            order, a document's chunks together.
        docs: the documents pairs may come from (the training side of the split).
    """
    cols = ["chunk_id", "doc_id", "chunk_index", "title", "text"]
    rows = [r for r in chunks.select(cols).to_pylist() if r["doc_id"] in docs]
    rng = np.random.default_rng(s.seed)
    found = [(a, p, k, r["doc_id"], r["chunk_id"]) for a, p, k, r in _chunk_pairs(rows, s, rng)
             if a.strip() and p.strip() and a.strip() != p.strip()]
    if len(found) > s.max_pairs:
        keep = np.sort(rng.choice(len(found), size=s.max_pairs, replace=False))
        found = [found[i] for i in keep]
    return pa.Table.from_pylist([dict(zip(PAIRS_SCHEMA.names, f, strict=True)) for f in found],
                                schema=PAIRS_SCHEMA)


def pair_counts(pairs: pa.Table) -> dict[str, int]:
    """Pairs per kind, sorted by kind."""
    kinds = pairs.column("kind").to_pylist()
    return {k: kinds.count(k) for k in sorted(set(kinds))}
