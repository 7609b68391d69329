"""Sentence boundaries: spaCy's rule-based sentencizer on a blank English pipeline (no model
download), loaded once per process."""

from __future__ import annotations

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def sentencizer() -> Any:
    """The blank English pipeline with a sentencizer: `sentencizer()(text).sents`."""
    import spacy  # noqa: PLC0415

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    return nlp
