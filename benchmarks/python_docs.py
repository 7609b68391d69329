"""A real corpus of long documentation pages (HTML with code), built from Debian's
`python3.11-doc` package, with queries taken from its structure (no labels written by hand):

- Every page of the library reference, language reference, tutorial, HOWTOs and "using"
  guides is one document, whole (navigation included, as a crawl has it), with up to
  `HEADINGS_PER_PAGE` of its section headings (3+ words, found on no other page) taken out;
  each is a query for its page (kind `heading`).
- Each question of the FAQ pages is one document holding its answer under its FAQ page's
  title and section heading, with the question taken out; the question is its query (kind
  `question`: natural questions in plain words).

    python -m benchmarks.python_docs OUT_DIR     # fetches with `apt-get download`

Written as `OUT_DIR/python-docs/corpus/...` and `OUT_DIR/python-docs/queries.jsonl`
(`query`, `source`: the target's path under corpus/, `kind`).
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

from bs4 import BeautifulSoup

from benchmarks.debian_corpora import _finish, _write, fetch

PACKAGE = "python3.11-doc"
HTML_DIR = "usr/share/doc/python3.11/html"
PAGE_DIRS = ("library", "reference", "tutorial", "howto", "using")
HEADINGS_PER_PAGE = 3
_MARKS = re.compile(r"[\u00b6#]\s*$")  # Sphinx's headerlink after a heading's text


def _heading(tag: object) -> str:
    return _MARKS.sub("", " ".join(tag.get_text(" ", strip=True).split())).strip()  # type: ignore[attr-defined]


def _sections(soup: BeautifulSoup) -> list[tuple[object, str]]:
    """(heading tag, its text) of the page's `<h2>`/`<h3>` section headings."""
    return [(h, _heading(h)) for s in soup.select("section") for h in s.find_all(
        ["h2", "h3"], recursive=False)]


def page_documents(root: Path) -> list[tuple[str, str, list[str]]]:
    """(relative path, page HTML with its query headings taken out, those headings)."""
    pages = [p for d in PAGE_DIRS for p in sorted((root / d).glob("*.html"))]
    soups = {p: BeautifulSoup(p.read_text(encoding="utf-8"), "lxml") for p in pages}
    seen = Counter(text for soup in soups.values() for _, text in _sections(soup))
    out = []
    for page, soup in soups.items():
        chosen = [(tag, text) for tag, text in _sections(soup)
                  if len(text.split()) >= 3 and seen[text] == 1][:HEADINGS_PER_PAGE]
        for tag, _ in chosen:
            tag.decompose()  # type: ignore[attr-defined]
        out.append((str(page.relative_to(root)), str(soup), [t for _, t in chosen]))
    return out


def faq_documents(root: Path) -> list[tuple[str, str, str]]:
    """(relative path, question, answer page HTML) per FAQ question (`<h3>` sections)."""
    out = []
    for page in sorted((root / "faq").glob("*.html")):
        soup = BeautifulSoup(page.read_text(encoding="utf-8"), "lxml")
        title = soup.title.get_text(strip=True) if soup.title else page.stem
        for i, section in enumerate(soup.select("section section section")):
            h3 = section.find("h3", recursive=False)
            parent = section.find_parent("section").find("h2", recursive=False)
            if h3 is None or parent is None:
                continue
            question = _heading(h3)
            h3.decompose()
            body = f"<h2>{_heading(parent)}</h2>{section}"
            if question.endswith("?") and len(section.get_text(" ", strip=True)) > 80:
                out.append((f"faq/{page.stem}/{i:03d}.html", question,
                            f"<html><head><title>{title}</title></head><body>{body}"
                            "</body></html>"))
    return out


def write_python_docs(where: Path, out: Path) -> dict[str, int]:
    """Fetch the package and write the corpus and its queries under `out`."""
    root = fetch((PACKAGE,), where)[PACKAGE] / HTML_DIR
    corpus, queries = out / "corpus", []
    for rel, html, headings in page_documents(root):
        _write(corpus / rel, html)
        queries += [{"query": h, "source": rel, "kind": "heading"} for h in headings]
    for rel, question, html in faq_documents(root):
        _write(corpus / rel, html)
        queries.append({"query": question, "source": rel, "kind": "question"})
    return _finish(out, queries)


if __name__ == "__main__":
    base = Path(sys.argv[1])
    print(json.dumps(write_python_docs(base / "debs", base / "python-docs"), indent=2))  # noqa: T201
