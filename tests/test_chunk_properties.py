"""The chunker's invariants on arbitrary Unicode (hypothesis)."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.chunk import chunk_documents
from tasks.core.config import ChunkConfig

# Prose-like text: words, punctuation, whitespace of every kind, any other code point that
# UTF-8 can carry (ingest decodes strict UTF-8: lone surrogates never reach the chunker).
TEXT = st.text(alphabet=st.one_of(
    st.sampled_from(list("abc xyz.!?\n\n\t-|#*`>0123456789")),
    st.characters(blacklist_categories=("Cs",))), max_size=400)


def chunks_of(text: str, strategy: str, tokenizer, budget: int = 24) -> list[dict]:
    docs = pa.table({"doc_id": ["d"], "source": ["s"], "format": ["markdown"], "title": [None],
                     "text": [text]})
    cfg = ChunkConfig(strategy=strategy, max_tokens=budget, overlap_sentences=1)
    return chunk_documents(docs, cfg, budget, tokenizer).to_pylist()


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXT, strategy=st.sampled_from(["sentence", "sliding_window", "recursive"]))
def test_chunks_are_exact_slices_within_budget_in_order(tokenizer, text, strategy):
    chunks = chunks_of(text, strategy, tokenizer)
    for i, c in enumerate(chunks):
        assert c["text"] == text[c["char_start"]:c["char_end"]] and c["text"].strip()
        assert c["text"] == c["text"].strip()
        assert 0 < c["n_tokens"] <= 24 and c["chunk_index"] == i
    starts = [c["char_start"] for c in chunks]
    assert starts == sorted(starts)


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXT)
def test_every_character_the_encoder_reads_is_in_some_chunk(tokenizer, text):
    chunks = chunks_of(text, "sentence", tokenizer)
    covered = set()
    for c in chunks:
        covered.update(range(c["char_start"], c["char_end"]))
    read = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                     verbose=False)["offset_mapping"]
    lost = [i for start, end in read for i in range(start, end) if i not in covered]
    assert not lost, [text[i] for i in lost]
