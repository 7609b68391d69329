"""HTML -> text side by side on a real documentation corpus: speed of each extractor, and the
retrieval effect of main-content extraction.

    python -m benchmarks.html_clean                    # the whole corpus (about 65 MB of HTML)
    python -m benchmarks.html_clean --limit-mb 10      # a seeded sample of pages

The corpus is built on first use from Debian packages (`apt-get download` + `dpkg-deb -x` into
benchmarks/out/): the Python 3.11 documentation (Sphinx), the Debian Administrator's Handbook
(English, Publican), the Debian Reference and the Debian FAQ (DocBook) — pages with
navigation bars, sidebars, tables of contents and footers, as documentation sites have.

Speed: HTML megabytes per second (of CPU time, and of wall time) of one process over every
page (text already decoded), the extractors taking turns page by page, for
embedpipe's clean (`clean_text`: lexbor walk + ftfy repair, default and main-content mode),
the BeautifulSoup + lxml code it replaced (kept here verbatim, with ftfy on the raw HTML as
it ran), resiliparse (`extract_plain_text`, full page and `main_content`), trafilatura
(`extract`, main content), and the bare parse-and-get-text floors of selectolax and lxml.

Retrieval: queries built from the pages' own structure — each page's title (h1) and its
section headings (h2/h3) that occur on that page only — against BM25 (embedpipe's lexical
index code) over the pipeline's chunks of each extractor's text; a query's relevant document
is the page it was taken from. MRR@10 and recall@1/@10 at page level.
Writes benchmarks/out/html_clean.json and .md.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.report import cpu_label, save

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("python3.11-doc", "debian-handbook", "debian-reference-en", "debian-faq")
# English pages only, each page once (the FAQ ships every page as x.html and x.en.html)
PAGE_GLOBS = ("usr/share/doc/python3.11/html/**/*.html",
              "usr/share/doc/debian-handbook/html/en-US/*.html",
              "usr/share/debian-reference/*.en.html", "usr/share/doc/debian/FAQ/*.en.html")


def build_corpus(out: Path) -> Path:
    """The extracted packages under `out/html_root` (downloaded and unpacked when missing)."""
    root, debs = out / "html_root", out / "html_debs"
    if root.is_dir():
        return root
    debs.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", *PACKAGES], cwd=debs, check=True)
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root


def load_pages(root: Path, limit_mb: float | None, seed: int) -> list[tuple[str, str]]:
    """(path under root, HTML text) of the corpus pages, a seeded sample when limited."""
    paths = sorted({p for g in PAGE_GLOBS for p in root.glob(g)})
    random.Random(seed).shuffle(paths)
    pages, size = [], 0
    for path in paths:
        if limit_mb is not None and size > limit_mb * 1e6:
            break
        data = path.read_bytes()
        pages.append((str(path.relative_to(root)), data.decode("utf-8", "replace")))
        size += len(data)
    return pages


# --- the code this replaced (tasks/clean.py before selectolax), kept to measure against ---
_BLOCK_TAGS = ("p", "div", "section", "article", "header", "footer", "main", "aside",
               "blockquote", "pre", "ul", "ol", "table", "h1", "h2", "h3", "h4", "h5",
               "h6", "br", "hr", "dl", "dt", "dd", "figure", "figcaption", "nav")
_CONTAINER_TAGS = ("ul", "ol", "dl", "table", "thead", "tbody", "tfoot", "tr", "html", "body")
_DROP_TAGS = ("script", "style", "noscript", "template", "svg", "head", "iframe")


def bs4_clean(html: str) -> str:
    """ftfy over the raw HTML, then BeautifulSoup + lxml (the depth guard left out: these
    pages nest at most 17 deep)."""
    import ftfy
    from bs4 import BeautifulSoup, NavigableString

    from tasks.clean import normalize_whitespace

    soup = BeautifulSoup(ftfy.fix_text(html, normalization="NFC"), "lxml")
    for tag in soup(_DROP_TAGS):
        tag.decompose()
    for s in soup.find_all(string=True):
        if not s.strip() and s.parent is not None and s.parent.name in _CONTAINER_TAGS:
            s.extract()
        elif s.find_parent("pre") is None:
            s.replace_with(re.sub(r"\s+", " ", str(s)))
    for tr in soup.find_all("tr"):
        cells = [c.get_text(" ", strip=True) for c in tr.find_all(["th", "td"])]
        tr.replace_with(NavigableString("\n" + " | ".join(cells)))
    for li in soup.find_all("li"):
        li.insert(0, NavigableString("\n- "))
    for tag in soup.find_all(_BLOCK_TAGS):
        tag.insert_before(NavigableString("\n\n"))
        tag.insert_after(NavigableString("\n\n"))
    return normalize_whitespace(soup.get_text())
# --- end of the replaced code ---


def extractors() -> dict[str, tuple[str, Callable[[str], str]]]:
    """name -> (what it is, html -> text)."""
    from lxml import html as lxml_html
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree
    from selectolax.lexbor import LexborHTMLParser
    from trafilatura import extract

    from tasks.clean import clean_text
    from tasks.core.config import CleanConfig

    full, main = CleanConfig(), CleanConfig(html_main_content=True)
    return {
        "embedpipe": ("embedpipe clean (selectolax/lexbor walk + ftfy)",
                      lambda h: clean_text(h, "html", "p.html", full)[1]),
        "embedpipe_main": ("embedpipe clean, `html_main_content: true`",
                           lambda h: clean_text(h, "html", "p.html", main)[1]),
        "bs4_before": ("BeautifulSoup + lxml + ftfy on the HTML (the code replaced)", bs4_clean),
        "resiliparse": ("resiliparse `extract_plain_text` (no ftfy)",
                        lambda h: extract_plain_text(HTMLTree.parse(h))),
        "resiliparse_main": ("resiliparse `extract_plain_text(main_content=True)` (no ftfy)",
                             lambda h: extract_plain_text(HTMLTree.parse(h), main_content=True)),
        "trafilatura_main": ("trafilatura `extract` (main content, no ftfy)",
                             lambda h: extract(h, include_tables=True) or ""),
        "selectolax_floor": ("selectolax parse + `body.text()`: no structure (a floor)",
                             lambda h: LexborHTMLParser(h).body.text(separator="\n")),
        "lxml_floor": ("lxml parse + `text_content()`: no structure (a floor)",
                       lambda h: lxml_html.fromstring(h.encode()).text_content()),
    }


def time_extractors(fns: dict[str, Callable[[str], str]], pages: list[tuple[str, str]]
                    ) -> tuple[dict[str, dict[str, float]], dict[str, list[str]]]:
    """Per extractor: wall and CPU seconds over every page, and its texts. The extractors
    take turns page by page, so a load that comes and goes on a shared machine falls on all
    of them alike; CPU seconds (this thread's) leave out the time others' processes took."""
    seconds = {name: {"wall": 0.0, "cpu": 0.0} for name in fns}
    texts: dict[str, list[str]] = {name: [] for name in fns}
    for _, html in pages:
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.thread_time()
            texts[name].append(fn(html))
            seconds[name]["cpu"] += time.thread_time() - cpu
            seconds[name]["wall"] += time.perf_counter() - wall
    return seconds, texts


def structure_queries(pages: list[tuple[str, str]], per_kind: int, seed: int
                      ) -> list[dict[str, Any]]:
    """Page titles (h1) and section headings (h2, h3) that occur on one page only, with
    section numbers and pilcrows taken off; up to `per_kind` of each, seeded."""
    from selectolax.lexbor import LexborHTMLParser

    found: dict[str, list[tuple[str, str]]] = {"title": [], "section": []}
    for page, html in pages:
        tree = LexborHTMLParser(html)
        for kind, selector in (("title", "h1"), ("section", "h2, h3")):
            for node in tree.css(selector):
                text = re.sub(r"^[\d.A-Z]*\d[\d.]*\s+|¶", "", " ".join(node.text().split()))
                if len(text.split()) >= 2:
                    found[kind].append((text.strip(), page))
    queries = []
    for kind, pairs in found.items():
        pages_of = Counter(t.lower() for t, _ in set(pairs))
        unique = sorted({(t, p) for t, p in pairs if pages_of[t.lower()] == 1})
        random.Random(seed).shuffle(unique)
        queries += [{"query": t, "page": p, "kind": kind} for t, p in unique[:per_kind]]
    return queries


def retrieval(pages: list[tuple[str, str]], texts: list[str], queries: list[dict[str, Any]]
              ) -> dict[str, Any]:
    """Page-level MRR@10 and recall@1/@10 of BM25 over the pipeline's chunks of `texts`."""
    import numpy as np
    import pyarrow as pa

    from tasks.chunk import chunk_documents
    from tasks.core.config import ChunkConfig, CleanConfig, EncodeConfig, SearchConfig
    from tasks.encoders.model import load_tokenizer
    from tasks.query.lexical import LexicalIndex, build_lexical

    kept = [i for i, t in enumerate(texts) if len(t) >= CleanConfig().min_chars]
    docs = pa.table({"doc_id": [pages[i][0] for i in kept], "source": [pages[i][0] for i in kept],
                     "format": ["html"] * len(kept), "title": pa.nulls(len(kept), pa.string()),
                     "text": [texts[i] for i in kept]})
    chunks = chunk_documents(docs, ChunkConfig(), 200, load_tokenizer(EncodeConfig().model))
    page_of = chunks.column("doc_id").to_pylist()
    cfg = SearchConfig()
    index = LexicalIndex(build_lexical(chunks.column("text").to_pylist(), cfg), cfg,
                         np.arange(len(page_of)))
    _, rows = index.search([q["query"] for q in queries], k=100)
    out: dict[str, Any] = {"pages_kept": len(kept), "chunks": len(page_of)}
    for kind in ("title", "section", "all"):
        mine = [i for i, q in enumerate(queries) if kind in ("all", q["kind"])]
        ranks = [_page_rank(rows[i], page_of, queries[i]["page"]) for i in mine]
        out[kind] = {"queries": len(mine),
                     "mrr_at_10": round(sum(1 / r for r in ranks if r <= 10) / len(mine), 4),
                     "recall_at_1": round(sum(r == 1 for r in ranks) / len(mine), 4),
                     "recall_at_10": round(sum(r <= 10 for r in ranks) / len(mine), 4)}
    return out


def _page_rank(rows: Any, page_of: list[str], page: str) -> float:
    """1-based rank of `page` among the distinct pages of the chunk hits, inf when absent."""
    seen: list[str] = []
    for row in rows.tolist():
        if row >= 0 and page_of[row] not in seen:
            seen.append(page_of[row])
            if page_of[row] == page:
                return len(seen)
    return float("inf")


def markdown(r: dict[str, Any]) -> str:
    mb, load = r["html_mb"], ", ".join(f"{x:.1f}" for x in r["load_average"])
    lines = [f"HTML -> text over {r['pages']} documentation pages ({mb:.1f} MB of HTML), one "
             f"process, the extractors taking turns page by page; {r['cpu']}, load average "
             f"{load}:", "",
             "| extractor | CPU s | MB per CPU s | wall s | MB per wall s | vs before (CPU) "
             "| text MB |", "|---|---|---|---|---|---|---|"]
    before = r["speed"]["bs4_before"]["cpu_s"]
    for s in r["speed"].values():
        lines.append(f"| {s['what']} | {s['cpu_s']:.2f} | {s['mb_per_cpu_s']:.1f} | "
                     f"{s['wall_s']:.2f} | {s['mb_per_wall_s']:.1f} | "
                     f"{before / s['cpu_s']:.1f}x | {s['text_mb']:.1f} |")
    lines += ["", f"Retrieval: BM25 over the chunks of each extractor's text; "
              f"{r['retrieval_queries']} structure queries (page titles, section headings) "
              "whose relevant document is their own page:", "",
              "| text from | pages kept | chunks | MRR@10 titles | MRR@10 sections | "
              "MRR@10 all | R@1 all | R@10 all |", "|---|---|---|---|---|---|---|---|"]
    for name, q in r["retrieval"].items():
        lines.append(f"| {name} | {q['pages_kept']} | {q['chunks']} | {q['title']['mrr_at_10']}"
                     f" | {q['section']['mrr_at_10']} | {q['all']['mrr_at_10']} | "
                     f"{q['all']['recall_at_1']} | {q['all']['recall_at_10']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit-mb", type=float, default=None)
    parser.add_argument("--queries", type=int, default=400, help="per kind (titles, sections)")
    parser.add_argument("--retrieval", nargs="*", default=[
        "embedpipe", "embedpipe_main", "resiliparse_main", "trafilatura_main"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    args = parser.parse_args()
    pages = load_pages(build_corpus(args.out), args.limit_mb, args.seed)
    html_mb = sum(len(h.encode()) for _, h in pages) / 1e6
    chosen = extractors()
    for _, html in pages[:3]:  # first calls pay for lazy imports and compiled patterns
        for _, fn in chosen.values():
            fn(html)
    seconds, texts = time_extractors({n: fn for n, (_, fn) in chosen.items()}, pages)
    speed = {name: {"what": what, "wall_s": round(seconds[name]["wall"], 3),
                    "cpu_s": round(seconds[name]["cpu"], 3),
                    "mb_per_cpu_s": round(html_mb / seconds[name]["cpu"], 2),
                    "mb_per_wall_s": round(html_mb / seconds[name]["wall"], 2),
                    "text_mb": round(sum(len(t.encode()) for t in texts[name]) / 1e6, 2)}
             for name, (what, _) in chosen.items()}
    queries = structure_queries(pages, args.queries, args.seed)
    report = {"cpu": cpu_label(), "load_average": os.getloadavg(), "pages": len(pages),
              "html_mb": round(html_mb, 2), "speed": speed, "retrieval_queries": len(queries),
              "retrieval": {name: retrieval(pages, texts[name], queries)
                            for name in args.retrieval}}
    save(args.out, "html_clean", report, markdown(report))


if __name__ == "__main__":
    main()
