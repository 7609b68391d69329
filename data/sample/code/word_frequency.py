"""Count word frequencies in text and print a simple bar chart.

Words are lowercased, punctuation is stripped, and common English stop
words can be excluded so that the distinctive vocabulary of a document
rises to the top.
"""

import re
import sys
from collections import Counter

STOP_WORDS = frozenset(
    "a an and are as at be but by for from has have in is it its of on or "
    "that the their this to was were will with".split()
)

# Letters plus internal apostrophes, so "don't" stays one token.
TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)*")


def tokenize(text):
    """Return a list of lowercase word tokens."""
    return TOKEN.findall(text.lower())


def word_counts(text, ignore_stop_words=True, min_length=1):
    """Return a Counter of words in ``text``."""
    words = tokenize(text)
    return Counter(
        w for w in words
        if len(w) >= min_length and not (ignore_stop_words and w in STOP_WORDS)
    )


def bar_chart(counter, top=10, width=40, symbol="#"):
    """Render the ``top`` most common words as a horizontal bar chart."""
    common = counter.most_common(top)
    if not common:
        return "(no words)"
    longest = max(len(word) for word, _ in common)
    peak = common[0][1]
    lines = []
    for word, count in common:
        bar = symbol * max(1, round(count / peak * width))
        lines.append(f"{word:>{longest}} | {bar} {count}")
    return "\n".join(lines)


def lexical_diversity(text):
    """Ratio of distinct words to total words (type-token ratio)."""
    words = tokenize(text)
    return len(set(words)) / len(words) if words else 0.0


SAMPLE = """The comet's nucleus is a dark, icy body. As the comet nears the Sun,
ice sublimates and the coma grows. The dust tail curves, while the ion tail
points straight away from the Sun. Comets don't glow on their own; the coma
and tails scatter sunlight and fluoresce under ultraviolet light."""

if __name__ == "__main__":
    text = open(sys.argv[1], encoding="utf-8").read() if len(sys.argv) > 1 else SAMPLE
    counts = word_counts(text, min_length=3)
    print(bar_chart(counts, top=8, width=30))
    print(f"lexical diversity: {lexical_diversity(text):.2f}")
