"""Sentence boundaries: spaCy's rule-based sentencizer on a blank English pipeline (no model
download), the same boundaries computed without building a spaCy Doc of the whole text.

spaCy's tokenizer cuts text at whitespace and tokenizes each run between on its own (a run of
whitespace other than one space is a token too). The sentencizer starts a sentence at the first
token after a sentence-final mark (`.`, `!`, `?`, `。`…) that is neither punctuation nor a
mark. A run of letters and digits only is one word-like token as far as that rule goes, so only
runs holding any other character are tokenized, by spaCy, and remembered per distinct run:
prose is mostly plain runs, and the marks repeat.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

# What follows a position: one space before a run (no token), a whitespace token, or a run.
_NEXT = re.compile(r" (?=\S)|(\s+)|(\S+)")
_SPACE = re.compile(r"\s")
_ODD_SPACE = re.compile(r"[^\S \t\n\r\x0b\x0c]")  # whitespace outside ASCII's six
_RUN_END = re.compile(r"\S*")
_KNOWN_RUNS = 200_000  # distinct runs remembered before the memo starts over
_SPACY_IMPORT = threading.Lock()


def import_spacy() -> Any:
    """spaCy, imported without torch unless torch is loaded already.

    thinc (under spaCy) imports torch whenever it is installed, for models this project never
    runs: 180 MB of RSS and about a second in every process that only needs a blank
    pipeline. A `None` in `sys.modules` makes that optional import fail as if torch were
    absent, for the moment spaCy is imported; torch imports normally afterwards.
    """
    with _SPACY_IMPORT:  # shards on threads may ask at once
        if "torch" in sys.modules:
            import spacy  # noqa: PLC0415

            return spacy
        sys.modules["torch"] = None  # type: ignore[assignment]
        try:
            import spacy  # noqa: PLC0415
        finally:
            if sys.modules.get("torch", 0) is None:
                del sys.modules["torch"]
        return spacy


@lru_cache(maxsize=1)
def sentencizer() -> Any:
    """The blank English pipeline with a sentencizer: `sentencizer()(text).sents`."""
    nlp = import_spacy().blank("en")
    nlp.add_pipe("sentencizer")
    return nlp


class _Runs:
    """What the sentencizer's rule does over one run, from spaCy's tokens of it: the offsets
    in the run where sentences start, and whether a mark is still open after it (given
    whether one was open before), remembered per distinct run."""

    def __init__(self) -> None:
        nlp = sentencizer()
        self.tokenizer = nlp.tokenizer
        marks = nlp.get_pipe("sentencizer").punct_chars
        self.marks = marks
        chars = re.escape("".join(sorted(marks)))
        self.ascii_marks = re.compile(r"[.!?]")  # the marks that are ASCII
        self.any_marks = re.compile(f"[{chars}]")
        # A whitespace-delimited run holding a mark: only after one can a sentence start.
        self.mark_runs = re.compile(rf"(?<!\S)\S*?[{chars}]\S*")
        self.known: dict[tuple[str, bool], tuple[tuple[int, ...], bool]] = {}

    def scan(self, run: str, seen_mark: bool) -> tuple[tuple[int, ...], bool]:
        got = self.known.get((run, seen_mark))
        if got is None:
            if len(self.known) >= _KNOWN_RUNS:
                self.known.clear()
            got = self.known[run, seen_mark] = self._scan(run, seen_mark)
        return got

    def _scan(self, run: str, seen_mark: bool) -> tuple[tuple[int, ...], bool]:
        starts = []
        for t in self.tokenizer(run):
            if t.text in self.marks:
                seen_mark = True
            elif seen_mark and not t.is_punct:
                starts.append(t.idx)
                seen_mark = False
        return tuple(starts), seen_mark


@lru_cache(maxsize=1)
def _runs() -> _Runs:
    return _Runs()


def _mark_runs(text: str, runs: _Runs) -> Iterator[tuple[int, int]]:
    """(start, end) of each whitespace-delimited run holding a mark, in order.

    Found from the marks themselves (one character class, fast) when the text's whitespace is
    ASCII, so the run's edges are found with `rfind`; else by one pattern over the runs.
    """
    if _ODD_SPACE.search(text):
        yield from (m.span() for m in runs.mark_runs.finditer(text))
        return
    pos = 0
    for m in (runs.ascii_marks if text.isascii() else runs.any_marks).finditer(text):
        if m.start() >= pos:
            start = max(pos, text.rfind(" ", pos, m.start()) + 1)
            while inner := _SPACE.search(text, start, m.start()):  # a tab or newline after
                start = inner.end()
            pos = _RUN_END.match(text, m.start()).end()
            yield start, pos


def sentence_starts(text: str) -> list[int]:
    """Where each sentence of `text` starts, as spaCy's sentencizer cuts it (the first is 0;
    a sentence may start at whitespace, which callers trim)."""
    runs, starts, pos = _runs(), [0], 0
    for a, b in _mark_runs(text, runs):
        if a < pos:
            continue  # read already, looking for the word after an earlier mark
        found, seen_mark = runs.scan(text[a:b], False)
        starts += [a + s for s in found]
        pos = b
        while seen_mark and (n := _NEXT.match(text, pos)):
            if n.group(1):  # a whitespace token: word-like
                starts.append(n.start())
                seen_mark = False
            elif n.group(2):
                found, seen_mark = runs.scan(n.group(2), True)
                starts += [n.start() + s for s in found]
            pos = n.end()
    return starts
