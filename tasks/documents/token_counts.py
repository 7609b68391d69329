"""Token counts of a document's spans, from the encoder's tokenizer (special tokens excluded).

The count of a span is the count of its text tokenized on its own. For a WordPiece tokenizer
behind BERT's pre-tokenizer (MiniLM, BGE, E5, GTE, MPNet…) a word never reaches across
whitespace or punctuation, so a span whose both edges sit at such a break counts the tokens
the whole document has between them: each document is tokenized once, in batches, and its
spans counted from it. Any other span, or any other tokenizer, is tokenized on its own.
"""

from __future__ import annotations

import copy
import unicodedata
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

Span = tuple[int, int]
READ_CHARS = 1_000_000  # documents longer than this are not read whole (memory)
BATCH_CHARS = 500_000  # characters tokenized in one batch call


def _bert_break(ch: str) -> bool:
    """Whether BERT's normalizer and pre-tokenizer cut a word at this character: whitespace
    as it sees it (space, tab, newline, return, Zs) or punctuation (ASCII or P*)."""
    if ch in " \t\n\r" or (ch.isascii() and not ch.isalnum() and ch.isprintable()):
        return True
    cat = unicodedata.category(ch)
    return cat == "Zs" or cat.startswith("P")


def reads_whole_words(backend: Any) -> bool:
    """Whether counts add up at word breaks: WordPiece behind BERT's normalizer and
    pre-tokenizer (checked by type, so a tokenizer that is not one keeps exact counts)."""
    kinds = (type(backend.normalizer).__name__, type(backend.pre_tokenizer).__name__,
             type(backend.model).__name__)
    return kinds in {("BertNormalizer", "BertPreTokenizer", "WordPiece"),
                     ("NoneType", "BertPreTokenizer", "WordPiece")}


class Tokens:
    """Counts and offsets of one document at a time (`use`), remembered until `forget()`."""

    def __init__(self, tokenizer: Any) -> None:
        self.backend = copy.deepcopy(tokenizer.backend_tokenizer)
        self.backend.no_truncation()
        self.backend.no_padding()
        self.whole_words = reads_whole_words(self.backend)
        self.known: dict[str, int] = {}
        self.text, self.enc = "", None

    def read(self, texts: Sequence[str]) -> Iterator[Any]:
        """Each text's tokenization (None for a text counted span by span), tokenized in
        batches of about `BATCH_CHARS`, the next batch in a thread while this one is used
        (the tokenizer lets go of the GIL)."""
        batches, size = [[]], 0
        for text in texts:
            if size >= BATCH_CHARS:
                batches, size = [*batches, []], 0
            batches[-1].append(text)
            size += len(text)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(self._encode, batches[0])
            for following in [*batches[1:], None]:
                done = pending.result()
                if following is not None:
                    pending = pool.submit(self._encode, following)
                yield from done

    def _encode(self, texts: list[str]) -> list[Any]:
        read = [self.whole_words and len(t) <= READ_CHARS for t in texts]
        whole = [t for t, r in zip(texts, read, strict=True) if r]
        encs = iter(self.backend.encode_batch(whole, add_special_tokens=False) if whole else [])
        return [next(encs) if r else None for r in read]

    def use(self, text: str, enc: Any) -> None:
        """Count spans of `text` from here on (`enc`: its tokenization from `read`)."""
        self.text, self.enc = text, enc
        self.known.clear()

    def forget(self) -> None:
        self.known.clear()

    def span_offsets(self, a: int, b: int) -> list[Span]:
        """Offsets in the current text of the tokens of span [a, b) tokenized on its own."""
        enc = self.enc
        if enc is not None and (a, b) == (0, len(self.text)):
            return enc.offsets
        if (n := self._from_document(a, b)) is not None:
            first = enc.char_to_token(a)
            return [enc.token_to_chars(t) for t in range(first, first + n)]
        return [(a + x, a + y) for x, y in self._alone(self.text[a:b]).offsets]

    def counts(self, texts: Sequence[str]) -> list[int]:
        """Counts of texts tokenized on their own."""
        for text in texts:
            if text not in self.known:
                self.known[text] = len(self._alone(text).ids)
        return [self.known[t] for t in texts]

    def _alone(self, text: str) -> Any:
        # One text at a time: a batch call would wait for the thread pool `read` keeps busy.
        return self.backend.encode(text, add_special_tokens=False)

    def span_counts(self, spans: Sequence[Span]) -> list[int]:
        """Counts of spans of the current text, each as if tokenized on its own."""
        got = [self._from_document(a, b) for a, b in spans]
        rest = [self.text[a:b] for (a, b), n in zip(spans, got, strict=True) if n is None]
        counted = iter(self.counts(rest))
        return [next(counted) if n is None else n for n in got]

    def _edge(self, i: int) -> bool:
        text = self.text
        return i in (0, len(text)) or _bert_break(text[i - 1]) or _bert_break(text[i])

    def _from_document(self, a: int, b: int) -> int | None:
        enc = self.enc
        if enc is None or b <= a or not (self._edge(a) and self._edge(b)):
            return None
        first, last = enc.char_to_token(a), enc.char_to_token(b - 1)
        if first is None or last is None or enc.token_to_chars(first)[0] != a \
                or enc.token_to_chars(last)[1] != b:
            return None
        return last - first + 1
