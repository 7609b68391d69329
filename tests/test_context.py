"""A chunk's context (title and heading trail), encoded and BM25-indexed before its text, while
its text and offsets stay the clean text's; probes take a heading out of the contexts too."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tasks.chunk import chunk_documents
from tasks.core.config import ChunkConfig, SearchConfig
from tasks.documents.context import (
    Headings,
    chunk_context,
    contextual_texts,
    text_budget,
    with_context,
)
from tasks.query.lexical import build_lexical
from tasks.query.probe_drawing import probe_for

PAGE = ("# Apt pinning\n\nPinning keeps a package at one version.\n\n"
        "## Preferences file\n\nWrite the rules into the preferences file.\n\n"
        "```\n# not a heading: a comment in code\nPackage: *\n```\n\n"
        "### Priorities\n\nA priority over 1000 allows downgrades.\n\n"
        "## Removing a pin\n\nDelete the stanza.")


def _never_cut(text: str) -> str:
    return text


def test_trail_is_the_headings_above_an_offset_outside_code_fences():
    h = Headings(PAGE)
    assert h.trail(PAGE.index("Pinning keeps")) == ["Apt pinning"]
    assert h.trail(PAGE.index("Package: *")) == ["Apt pinning", "Preferences file"]
    assert h.trail(PAGE.index("A priority")) == ["Apt pinning", "Preferences file",
                                                 "Priorities"]
    # a sibling heading closes the previous one and every deeper one
    assert h.trail(PAGE.index("Delete")) == ["Apt pinning", "Removing a pin"]


def test_context_leaves_out_what_the_text_starts_with_and_drops_middle_headings_to_fit():
    trail = ["Apt pinning", "Preferences file", "Priorities"]
    assert chunk_context("Debian Reference", trail, "A priority over 1000",
                         lambda s: True, _never_cut) == (
        "Debian Reference > Apt pinning > Preferences file > Priorities")
    # a chunk that starts with its own heading does not repeat it
    assert chunk_context("Debian Reference", trail, "### Priorities\n\nA priority",
                         lambda s: True, _never_cut) == (
        "Debian Reference > Apt pinning > Preferences file")
    # too long: the middle goes first, the title and the nearest heading stay
    assert chunk_context("Debian Reference", trail, "A priority",
                         lambda s: len(s) <= 40, _never_cut) == (
        "Debian Reference > Priorities")
    assert chunk_context("Debian Reference", trail, "A priority",
                         lambda s: False, lambda s: s[:6]) == "Debian"
    # a record's title at its text's head, a heading equal to the title: no repeat
    assert chunk_context("Kelp", ["Kelp"], "Kelp\n\nKelp grows", lambda s: True,
                         _never_cut) is None
    assert with_context(None, "x") == "x"
    assert with_context("T > H", "x") == "T > H\n\nx"


def _chunks(context: str, fmt: str = "markdown", title: str | None = "Debian Reference"):
    from tasks.encoders.model import load_tokenizer

    docs = pa.table({"doc_id": ["d1"], "source": ["a.md"], "format": [fmt],
                     "title": [title], "text": [PAGE]})
    cfg = ChunkConfig(max_tokens=24, overlap_sentences=0, context=context)
    return chunk_documents(docs, cfg, 24, load_tokenizer(
        "sentence-transformers/all-MiniLM-L6-v2", None)).to_pylist()


def test_chunks_carry_their_context_and_keep_their_offsets():
    rows = _chunks("headings")
    for r in rows:
        assert PAGE[r["char_start"]:r["char_end"]] == r["text"]
    by_text = {r["text"].split("\n")[0]: r["context"] for r in rows}
    assert by_text["A priority over 1000 allows downgrades."] == (
        "Debian Reference > Apt pinning > Preferences file > Priorities")
    assert [r["context"] for r in _chunks("title")] == ["Debian Reference"] * len(rows)
    assert {r["context"] for r in _chunks("none")} == {None}
    # plain text has no heading trail: the title alone
    assert {r["context"] for r in _chunks("headings", "text")} == {"Debian Reference"}


def test_the_text_budget_leaves_the_model_room_for_the_context():
    assert text_budget(ChunkConfig(max_tokens=200, context="headings"), 254) == 200
    assert text_budget(ChunkConfig(max_tokens=250, context="headings"), 254) == 222
    assert text_budget(ChunkConfig(max_tokens=250, context="none"), 254) == 250
    with pytest.raises(ValueError, match="chunk.context_tokens"):
        text_budget(ChunkConfig(max_tokens=100, context="title", context_tokens=128), 130)


def test_bm25_finds_a_chunk_by_a_word_only_its_context_holds():
    table = pa.table({"text": ["Delete the stanza.", "Bake at 220 degrees."],
                      "context": ["Apt pinning > Removing a pin", None]})
    texts = contextual_texts(table)
    assert texts[0] == "Apt pinning > Removing a pin\n\nDelete the stanza."
    lex = build_lexical(texts, SearchConfig())
    scores = lex.get_scores(["pin"])
    assert scores[0] > 0 and scores[1] == 0


def test_a_heading_probe_is_taken_out_of_the_contexts_too():
    texts = ["## Removing a pin\n\nDelete the stanza from the file.",
             "Then run apt update to read the preferences again."]
    contexts = ["Apt pinning", "Apt pinning > Removing a pin"]
    probe = probe_for("d1", [7, 8], texts, None, 1, np.random.default_rng(0),
                      contexts=contexts)
    assert probe is not None and probe.kind == "heading" and probe.query == "Removing a pin"
    assert probe.masked == {7: "Apt pinning\n\n \n\nDelete the stanza from the file.",
                            8: "Apt pinning\n\nThen run apt update to read the preferences "
                               "again."}


def test_a_title_holding_the_first_heading_gives_way_to_it_and_permalinks_go():
    from tasks.documents.context import page_name

    page = "# json — JSON encoder and decoder¶\n\nIntro.\n\n## Basic Usage¶\n\nDumps."
    h = Headings(page)
    assert h.trail(page.index("Dumps")) == ["json — JSON encoder and decoder", "Basic Usage"]
    assert page_name("json — JSON encoder and decoder — Python 3.11.2 documentation",
                     h) == "json — JSON encoder and decoder"
    assert page_name("Debian Reference", h) == "Debian Reference"  # no heading in it
    assert page_name(None, h) is None and page_name("T", None) == "T"
