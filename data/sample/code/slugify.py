"""Turn arbitrary titles into URL-friendly slugs.

"Crème Brûlée: 10 Tips & Tricks!" becomes "creme-brulee-10-tips-and-tricks".
Accents are stripped with Unicode NFKD normalization, symbols are dropped,
and runs of separators collapse into a single hyphen.
"""

import re
import unicodedata

# Characters worth spelling out instead of silently deleting.
REPLACEMENTS = {"&": " and ", "@": " at ", "+": " plus ", "ß": "ss", "æ": "ae", "ø": "o"}

_NON_WORD = re.compile(r"[^a-z0-9]+")


def strip_accents(text):
    """Remove combining diacritical marks, e.g. 'é' -> 'e'."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def slugify(text, separator="-", max_length=80):
    """Return a lowercase ASCII slug for ``text``.

    The slug is trimmed at a separator boundary so that words are not
    cut in half when ``max_length`` is exceeded.
    """
    text = text.lower()
    for char, replacement in REPLACEMENTS.items():
        text = text.replace(char, replacement)
    text = strip_accents(text)
    text = text.encode("ascii", "ignore").decode("ascii")
    slug = _NON_WORD.sub(separator, text).strip(separator)
    if len(slug) > max_length:
        cut = slug.rfind(separator, 0, max_length + 1)
        slug = slug[: cut if cut > 0 else max_length].strip(separator)
    return slug


def unique_slug(text, existing, **kwargs):
    """Return a slug not present in ``existing`` by appending -2, -3, ..."""
    base = slugify(text, **kwargs) or "untitled"
    candidate, counter = base, 2
    while candidate in existing:
        candidate = f"{base}-{counter}"
        counter += 1
    return candidate


if __name__ == "__main__":
    titles = [
        "Crème Brûlée: 10 Tips & Tricks!",
        "  Hello,   World  ",
        "Straße nach Zürich",
        "C++ vs. Rust @ Scale",
        "???",
    ]
    taken = set()
    for title in titles:
        slug = unique_slug(title, taken)
        taken.add(slug)
        print(f"{title!r:40} -> {slug}")
    print(slugify("a very long title " * 10, max_length=30))
    print(unique_slug("Hello World", taken))
