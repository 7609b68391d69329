from __future__ import annotations

import re

import pyarrow as pa
import pytest

from tasks.chunk import chunk_documents
from tasks.core.config import ChunkConfig, EncodeConfig
from tasks.documents.spans import split_sections, split_units
from tasks.documents.token_counts import Tokens
from tasks.encoders.model import check_chunk_fits

PROSE = " ".join(
    f"Sentence number {i} talks about topic {i % 7} with some extra words to fill it."
    for i in range(60)
)
MD = (
    "# Bread\n\nFlour and water make dough. Salt controls fermentation.\n\n"
    "## Table\n\n| item | grams |\n| --- | --- |\n| flour | 500 |\n| water | 350 |\n\n"
    "## Method\n\n- Mix.\n- Rest.\n\n```python\nprint('bake')\n```\n"
)


def _docs(*texts: str, fmt: str = "text") -> pa.Table:
    n = len(texts)
    return pa.table({"doc_id": [f"d{i}" for i in range(n)], "source": ["s"] * n,
                     "format": [fmt] * n, "title": [None] * n, "text": list(texts)})


def test_units_split_sentences_and_structured_lines():
    text = "First one. Second one.\n\n- item a\n- item b\n\n| a | b |\n| 1 | 2 |"
    units = [text[a:b] for a, b in split_units(text)]
    assert units == ["First one.", "Second one.", "- item a", "- item b", "| a | b |\n| 1 | 2 |"]


@pytest.mark.parametrize("strategy", ["sentence", "sliding_window", "recursive"])
def test_no_chunk_over_budget_and_offsets_map_back(tokenizer, strategy):
    cfg = ChunkConfig(strategy=strategy, max_tokens=40)
    chunks = chunk_documents(_docs(PROSE, MD, fmt="markdown"), cfg, 40, tokenizer)
    tok = Tokens(tokenizer)
    source = {"d0": PROSE, "d1": MD}
    for row in chunks.to_pylist():
        assert row["n_tokens"] <= 40
        assert tok.counts([row["text"]])[0] == row["n_tokens"]
        assert source[row["doc_id"]][row["char_start"]:row["char_end"]] == row["text"]


def test_every_sentence_lands_in_a_chunk_with_overlap(tokenizer):
    cfg = ChunkConfig(max_tokens=60, overlap_sentences=1)
    chunks = chunk_documents(_docs(PROSE), cfg, 60, tokenizer).column("text").to_pylist()
    sentences = re.findall(r"Sentence number \d+ [^.]*\.", PROSE)
    assert all(any(s in c for c in chunks) for s in sentences)
    first_of_second = chunks[1].split(".")[0] + "."
    assert first_of_second in chunks[0]  # one sentence of overlap


def test_table_kept_whole_when_it_fits(tokenizer):
    chunks = chunk_documents(_docs(MD, fmt="markdown"), ChunkConfig(max_tokens=30), 30, tokenizer)
    table = "| item | grams |\n| --- | --- |\n| flour | 500 |\n| water | 350 |"
    assert any(table in c for c in chunks.column("text").to_pylist())


def test_recursive_sections_and_code_fences():
    parts = [MD[a:b] for a, b in split_sections(MD)]
    assert parts[0].startswith("# Bread") and any(p.startswith("```python") for p in parts)


def test_sentence_longer_than_budget_is_cut(tokenizer):
    long_sentence = "word " * 300
    chunks = chunk_documents(_docs(long_sentence), ChunkConfig(max_tokens=50), 50, tokenizer)
    assert chunks.num_rows >= 6 and max(chunks.column("n_tokens").to_pylist()) <= 50


def test_budget_larger_than_model_fails_with_numbers():
    with pytest.raises(ValueError, match=r"chunk\.max_tokens: 300 does not fit .*= 254"):
        check_chunk_fits(EncodeConfig(), 300)
    check_chunk_fits(EncodeConfig(passage_prefix="passage: "), 252)  # fits: no error
    with pytest.raises(ValueError, match="2 prefix tokens = 252"):
        check_chunk_fits(EncodeConfig(passage_prefix="passage: "), 253)


@pytest.mark.timeout(60)
def test_packing_always_moves_forward(tokenizer):
    # A generated document on which an earlier packer looped forever (the overlap sentence
    # plus the next unit re-tokenized over budget, so no unit was ever added).
    text = (
        'Feeding and breeding happen in very different places.\n\nFeeding and breeding'
        ' happen in very different places. Pleated grooves running from the chin to '
        'the the allow belly throat to balloon outward like a parachute. In the eigh'
        'teenth and nineteenth centuries, the fur trade reduced otters to a few scat'
        'tered colonies. Dolphins hunt in murky water and at night by listening to t'
        'he echoes of their own clicks. From this colony polyp, repeated budding wil'
        'l eventually form a one of thousands. Unlike seaweeds, they have roots, car'
        'ried and flowers, and some species even release pollen underwater in long t'
        'hreads veins by the current. How do a without eyes or animals brain coordin'
        'ate so precisely? Once they reach the coast, smell takes over. Scientists t'
        'rack the danger using "degree heating weeks," a measure that far up how add'
        's and how long water temperatures exceed the bleaching threshold. Some stud'
        'ies also suggest that regional wind patterns and calm water influence the t'
        'iming, since calm seas keep slicks together and improve the odds of fertili'
        'sation. Dead cells and faecal pellets sink, carrying carbon into the deep o'
        'cean, a process called the biological pump. One or more whales swim in a ri'
        'sing spiral bubbles a school of herring, releasing streams of beneath from '
        'their blowholes. All males in one ocean basin sing roughly the same song at'
        ' any given time, yet that song slowly changes over a breeding season as sin'
        'gers add, drop or alter phrases.'
    )
    chunks = chunk_documents(_docs(text), ChunkConfig(), 200, tokenizer).to_pylist()
    assert chunks[0]["char_start"] == 0 and chunks[-1]["char_end"] == len(text)
    assert all(c["n_tokens"] <= 200 for c in chunks)


def test_paragraph_spans_are_those_of_the_paragraph_pattern():
    import random

    from tasks.documents.spans import _paragraphs

    pattern = re.compile(r"(?:[^\n]|\n(?!\s*\n))+")
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice("ab \n\n\t\r.") for _ in range(rng.randint(0, 60)))
        assert list(_paragraphs(text)) == [(m.start(), m.end()) for m in pattern.finditer(text)]


def test_paragraph_over_the_sentencizer_limit_is_split_not_refused(tokenizer):
    text = "word " * 300_000 + "\n\nA short closing sentence."  # 1.5M chars, no punctuation
    cfg = ChunkConfig()
    chunks = chunk_documents(_docs(text), cfg, 200, tokenizer).to_pylist()
    assert chunks[-1]["text"] == "A short closing sentence."
    assert all(text[c["char_start"]:c["char_end"]] == c["text"] and c["n_tokens"] <= 200
               for c in chunks)
    covered = sum(c["text"].count("word") for c in chunks)
    assert covered >= 300_000  # nothing dropped (overlap may repeat some)


def test_single_huge_line_is_split_in_flat_memory():
    import subprocess
    import sys

    code = ("import resource; from tasks.documents.spans import split_units; "
            "t = 'word ' * 4_000_000; "
            "b = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; u = split_units(t); "
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - b) // 1024, len(u))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300).stdout.split()
    grown_mb, units = int(out[0]), int(out[1])
    assert units == 200 and grown_mb < 600  # a 20 MB line; the old pattern grew 2,288 MB
