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


# Text where the sentencizer's rule has work to do: marks, quotes and brackets next to words,
# abbreviations, every kind of whitespace (spaCy makes most runs of it a token), any code point.
MARKED = st.lists(st.one_of(
    st.sampled_from(["a", "word", " ", "  ", "\n", "\t", "\u2028", "\xa0", ".", "!", "?", "...",
                     "U.S.", "e.g.", "3.5", '"', "'", "(", ")", "“", "”", "。", "！", ",", ";",
                     "_", "-", "Dr.", "’s", "x.Y", ":)", "tokenization", "Zürich"]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzé", min_size=2, max_size=14),  # word pieces
    st.characters(blacklist_categories=("Cs",))), max_size=60).map("".join)


@settings(max_examples=400, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(text=MARKED)
def test_sentence_starts_are_those_of_spacys_sentencizer(text):
    from tasks.documents.sentences import sentence_starts, sentencizer

    def sentences(starts):
        bounds = [*starts, len(text)]
        pairs = zip(bounds, bounds[1:], strict=False)
        return [text[a:b].strip() for a, b in pairs if text[a:b].strip()]

    spacy_starts = [s.start_char for s in sentencizer()(text).sents]
    assert sentences(sentence_starts(text)) == sentences(spacy_starts)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(text=MARKED, cuts=st.lists(st.integers(0, 1000), min_size=2, max_size=12))
def test_span_counts_are_those_of_each_span_tokenized_alone(tokenizer, text, cuts):
    from tasks.documents.token_counts import Tokens

    tokens = Tokens(tokenizer)
    tokens.use(text, next(tokens.read([text])))
    bounds = sorted({c % (len(text) + 1) for c in cuts})
    spans = [(a, b) for a in bounds for b in bounds if a < b]
    alone = [len(tokenizer(text[a:b], add_special_tokens=False)["input_ids"]) for a, b in spans]
    assert tokens.span_counts(spans) == alone
    for a, b in spans:
        offsets = tokenizer(text[a:b], add_special_tokens=False,
                            return_offsets_mapping=True)["offset_mapping"]
        assert tokens.span_offsets(a, b) == [(a + x, a + y) for x, y in offsets]
