"""Real public corpora nobody here wrote, built from Debian packages, with queries taken from
their structure (no labels written by hand):

- `debian-docs` (questions and headings over long HTML pages): the Debian FAQ
  (`debian-faq`), one document per question holding its answer with the question taken out,
  queried by the question (kind `question`); and the Debian Reference
  (`debian-reference-en`), one HTML document per section (`<h2>`) with its subsection
  headings taken out, queried by each subsection heading (kind `heading`: short keyword-like
  phrases). Both sets live in one corpus, so each is searched among the other's documents.
- `manpages` (keyword and identifier lookups): the C library and system call pages
  (`manpages-dev`), one text document per page with its NAME section taken out, queried by
  the NAME line's one-line description (kind `keywords`) and by the page's first name
  (kind `identifier`; the name still appears in the page's SYNOPSIS).

    python -m benchmarks.debian_corpora OUT_DIR     # fetches with `apt-get download`

Each corpus is written as `OUT_DIR/<name>/corpus/...` and `OUT_DIR/<name>/queries.jsonl`
(`query`, `source`: the target's path under corpus/, `kind`).
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

from bs4 import BeautifulSoup, XMLParsedAsHTMLWarning

warnings.filterwarnings("ignore", category=XMLParsedAsHTMLWarning)

PACKAGES = ("debian-faq", "debian-reference-en", "manpages-dev")
FAQ_DIR = "usr/share/doc/debian/FAQ"
REFERENCE_DIR = "usr/share/debian-reference"
MAN_DIR = "usr/share/man"
_NUMBER = re.compile(r"^\s*[0-9A-Z]+(\.[0-9]+)*\.?\s+")  # "7.2. " / "A.1 " section numbers


def fetch(packages: tuple[str, ...], where: Path) -> dict[str, Path]:
    """Download (`apt-get download`, no install) and unpack each package; its root folder."""
    where.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in packages:
        root = where / name
        if not root.is_dir():
            if not list(where.glob(f"{name}_*.deb")):
                subprocess.run(["apt-get", "download", name], cwd=where, check=True,
                               capture_output=True)
            deb = sorted(where.glob(f"{name}_*.deb"))[-1]
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        out[name] = root
    return out


def _heading_text(tag: object) -> str:
    return _NUMBER.sub("", tag.get_text(" ", strip=True)).strip()  # type: ignore[attr-defined]


def faq_documents(root: Path) -> list[tuple[str, str, str]]:
    """(relative path, question, answer HTML) per FAQ question (`<h2>` sections)."""
    out = []
    for page in sorted((root / FAQ_DIR).glob("*.en.html")):
        soup = BeautifulSoup(page.read_text(encoding="utf-8"), "lxml")
        for i, section in enumerate(soup.select("div.section")):
            h2 = section.find("h2")
            if h2 is None or not section.find("h2") or section.find_parent("div.section"):
                continue
            question = _heading_text(h2)
            for h in section.find_all(["h2", "h3", "h4"]):
                h.decompose()
            if question.endswith("?") and len(section.get_text(" ", strip=True)) > 80:
                out.append((f"faq/{page.stem.split('.')[0]}/{i:03d}.html", question,
                            str(section)))
    return out


def reference_documents(root: Path) -> list[tuple[str, list[str], str]]:
    """(relative path, subsection headings, section HTML without them) per `<h2>` section of
    the Debian Reference's chapters."""
    out = []
    for page in sorted((root / REFERENCE_DIR).glob("ch*.en.html")):
        soup = BeautifulSoup(page.read_text(encoding="utf-8"), "lxml")
        for i, section in enumerate(soup.find_all("div", class_="section")):
            h2 = section.find("h2")
            if h2 is None or section.find_parent("div", class_="section") is not None:
                continue
            headings = [_heading_text(h) for h in section.find_all(["h3", "h4"])]
            for h in section.find_all(["h2", "h3", "h4"]):
                h.decompose()
            if len(section.get_text(" ", strip=True)) > 200:
                out.append((f"reference/{page.stem.split('.')[0]}/{i:03d}.html",
                            [h for h in headings if len(h.split()) >= 2], str(section)))
    return out


def _page(body: str, title: str) -> str:
    return f"<html><head><title>{title}</title></head><body>{body}</body></html>"


def write_debian_docs(packages: dict[str, Path], out: Path) -> dict[str, int]:
    """The `debian-docs` corpus and its queries under `out`."""
    corpus, queries = out / "corpus", []
    for rel, question, html in faq_documents(packages["debian-faq"]):
        _write(corpus / rel, _page(html, "Debian FAQ"))
        queries.append({"query": question, "source": rel, "kind": "question"})
    for rel, headings, html in reference_documents(packages["debian-reference-en"]):
        _write(corpus / rel, _page(html, "Debian Reference"))
        queries += [{"query": h, "source": rel, "kind": "heading"} for h in headings]
    return _finish(out, queries)


_ROFF_ESCAPE = re.compile(r"\\f[BIRP]|\\f\(..|\\\*\(..|\\\*.|\\[&|^]|\\c")
_ROFF_MACRO = re.compile(r"^\.(B|I|BR|BI|IB|RB|IR|RI|SM|SB)\s+")


def roff_to_text(roff: str) -> tuple[str, str]:
    """(NAME line, the page's text without its NAME section) of a man page source: macros
    dropped, fonts and escapes undone, section names kept as lines."""
    lines, name, section = [], "", None
    for raw in roff.splitlines():
        if raw.startswith(('.\\"', "'\\\"")):
            continue
        if raw.startswith(".SH"):
            section = raw[3:].strip().strip('"')
            if section != "NAME":
                lines.append(section)
            continue
        line = _ROFF_MACRO.sub("", raw)
        if line.startswith("."):
            continue
        text = _ROFF_ESCAPE.sub("", line).replace("\\-", "-").replace('"', "").replace(
            "\\e", "\\").strip()
        if section == "NAME":
            name += " " + text
        elif text:
            lines.append(text)
    return name.strip(), "\n".join(lines)


def write_manpages(packages: dict[str, Path], out: Path) -> dict[str, int]:
    """The `manpages` corpus and its queries under `out`."""
    corpus, queries = out / "corpus", []
    for page in sorted((packages["manpages-dev"] / MAN_DIR).rglob("*.gz")):
        if page.is_symlink():
            continue
        name, text = roff_to_text(gzip.decompress(page.read_bytes()).decode("utf-8", "replace"))
        names, _, description = name.partition(" - ")
        if not description or len(text) < 200:
            continue
        rel = f"{page.parent.name}/{page.name.removesuffix('.gz')}.txt"
        _write(corpus / rel, text)
        queries.append({"query": description.strip(), "source": rel, "kind": "keywords"})
        first = names.split(",")[0].strip()
        if first:
            queries.append({"query": first, "source": rel, "kind": "identifier"})
    return _finish(out, queries)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _finish(out: Path, queries: list[dict[str, str]]) -> dict[str, int]:
    (out / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    docs = sum(1 for p in (out / "corpus").rglob("*") if p.is_file())
    kinds = {k: sum(q["kind"] == k for q in queries) for k in sorted({q["kind"] for q in queries})}
    return {"docs": docs, "queries": len(queries), **kinds}


def build_all(out: Path) -> dict[str, dict[str, int]]:
    """Fetch the packages and write both corpora under `out`; counts per corpus."""
    packages = fetch(PACKAGES, out / "debs")
    return {"debian-docs": write_debian_docs(packages, out / "debian-docs"),
            "manpages": write_manpages(packages, out / "manpages")}


if __name__ == "__main__":
    print(json.dumps(build_all(Path(sys.argv[1])), indent=2))  # noqa: T201
