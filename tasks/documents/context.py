"""A chunk's context: its document's title and the heading trail above it.

A chunk cut out of a long page often never names what it is about ("Run it with `-v` to see
why"); the page's title and the headings it sits under do. The chunk's context is encoded
and BM25-indexed with its text (as LlamaIndex embeds a node's metadata with its text), while
`text`, `char_start` and `char_end` stay the clean text's own span.

Headings are markdown heading lines (`## Pinning`; clean renders HTML's `<h2>` so), outside
fenced code blocks, in markdown and HTML documents (their permalink glyph dropped); other
formats get the title alone. A title that holds the document's first heading gives way to
it (the site's name in a `<title>` says nothing about a chunk). A piece the chunk's text
already starts with is left out (a record's title, which clean puts at its first chunk's
head), and so is a heading equal to the title.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from tasks.core.config import ChunkConfig
from tasks.documents.token_counts import Tokens

SEPARATOR = " > "  # between the title and the headings of the trail
TRAIL_FORMATS = ("markdown", "html")
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)
# the permalink glyph site generators put after a heading (Sphinx, MkDocs: "Usage¶")
_LINK_MARK = re.compile(r"\s*[\u00b6\u00a7\U0001f517]+$")
_FENCE = re.compile(r"^```.*?(?:^```[^\n]*$|\Z)", re.M | re.S)


def with_context(context: str | None, text: str) -> str:
    """The text a chunk is encoded and BM25-indexed as: its context, a blank line, its text."""
    return f"{context}\n\n{text}" if context else text


def contextual_texts(chunks: pa.Table) -> list[str]:
    """`with_context` of each row of a table with `text` and (where it has one) `context`."""
    texts = chunks.column("text").to_pylist()
    if "context" not in chunks.column_names:
        return texts
    return [with_context(c, t) for c, t in zip(chunks.column("context").to_pylist(), texts,
                                               strict=True)]


class Headings:
    """The heading lines of one document, for the trail above any offset."""

    def __init__(self, text: str) -> None:
        fences = [(m.start(), m.end()) for m in _FENCE.finditer(text)]
        found = [m for m in _HEADING.finditer(text)
                 if not any(a <= m.start() < b for a, b in fences)]
        self.starts = [m.start() for m in found]
        self.found = [(len(m.group(1)), _LINK_MARK.sub("", " ".join(m.group(2).split())))
                      for m in found]
        self.first = self.found[0][1] if self.found else ""

    def trail(self, offset: int) -> list[str]:
        """The headings above `offset`, outermost first: the last heading of each level
        up to it, a heading closing every one of its level and deeper (a chunk that starts
        with a heading ends its trail with it: `chunk_context` leaves it out)."""
        stack: list[tuple[int, str]] = []
        for level, heading in self.found[:bisect.bisect_right(self.starts, offset)]:
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, heading))
        return [h for _, h in stack]


def page_name(title: str | None, headings: Headings | None) -> str | None:
    """What names the document in its chunks' context: its first heading where the title
    holds it (a `<title>` is often the page's heading plus the site's name: "json — JSON
    encoder and decoder — Python 3.11.2 documentation"), else the title."""
    own = (title or "").strip()
    first = headings.first if headings is not None else ""
    return first if first and first in own else own or None


def chunk_context(title: str | None, trail: list[str], text: str,
                  fits: Callable[[str], bool], cut: Callable[[str], str]) -> str | None:
    """The context of a chunk whose text is `text`: the title (`page_name`) and the trail,
    less the pieces the text starts with and a heading equal to the title; while it does
    not `fit` the token budget, middle headings go (the outermost, the title, and the
    innermost, the nearest heading, say most), then the innermost; what is left is `cut` to
    the budget."""
    head = text.lstrip("# \t")
    own = (title or "").strip()
    pieces = [p for p in [own, *trail] if p and not head.startswith(p)]
    pieces = [p for i, p in enumerate(pieces) if i == 0 or p != own]
    if not pieces:
        return None
    while len(pieces) > 1 and not fits(SEPARATOR.join(pieces)):
        pieces.pop(len(pieces) - 2 if len(pieces) > 2 else 1)
    return cut(SEPARATOR.join(pieces)) or None


def text_budget(cfg: ChunkConfig, room: int) -> int:
    """Tokens a chunk's text may take: `max_tokens`, less where the model's `room` (its
    sequence length less special and prefix tokens) would not hold the context too."""
    if cfg.context == "none":
        return cfg.max_tokens
    budget = min(cfg.max_tokens, room - cfg.context_tokens)
    if budget < 8:
        raise ValueError(f"chunk.context_tokens: {cfg.context_tokens} leaves {budget} of the "
                         f"model's {room} tokens for a chunk's text; use <= {room - 8} or "
                         "chunk.context: none")
    return budget


class ContextFitter:
    """A context's fit to `limit` tokens of the encoder's tokenizer: `fits` and `cut` (at
    the last whole token within the limit)."""

    def __init__(self, tokens: Tokens, limit: int) -> None:
        self.backend, self.limit = tokens.backend, limit
        self.counts: dict[str, int] = {}  # the chunks of a section share one context

    def fits(self, text: str) -> bool:
        if text not in self.counts:
            self.counts[text] = len(self.backend.encode(text, add_special_tokens=False).ids)
        return self.counts[text] <= self.limit

    def cut(self, text: str) -> str:
        if self.fits(text):
            return text
        return text[:self.backend.encode(text, add_special_tokens=False).offsets[
            self.limit - 1][1]]


def chunk_contexts(doc: dict[str, Any], spans: list[tuple[int, int]], cfg: ChunkConfig,
                   fitter: ContextFitter) -> list[str | None]:
    """Each chunk's context under `chunk.context` (tasks/documents/context.py)."""
    if cfg.context == "none":
        return [None] * len(spans)
    text = doc["text"]
    headings = (Headings(text) if cfg.context == "headings" and doc["format"] in TRAIL_FORMATS
                else None)
    name = page_name(doc["title"], headings)
    return [chunk_context(name, headings.trail(a) if headings else [], text[a:b],
                          fitter.fits, fitter.cut) for a, b in spans]
