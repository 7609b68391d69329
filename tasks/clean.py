"""clean: `docs.parquet` -> `docs.parquet` with repaired, normalised text + `rejects.parquet`.

Schema out: doc_id, source, format, title, text, metadata.
Invariant: one row per input document, or a reject with the reason; paragraph breaks kept.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Any

import ftfy
import pyarrow as pa
from bs4 import BeautifulSoup, NavigableString, Tag
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.core.catalog import CLEAN_DOCS, CLEAN_REJECTS, INGEST_DOCS
from tasks.core.config import CleanConfig
from tasks.core.progress import task_logger
from tasks.core.runtime import main, start_stage

_BLOCK_TAGS = ("p", "div", "section", "article", "header", "footer", "main", "aside",
               "blockquote", "pre", "ul", "ol", "table", "h1", "h2", "h3", "h4", "h5",
               "h6", "br", "hr", "dl", "dt", "dd", "figure", "figcaption", "nav")
_CONTAINER_TAGS = ("ul", "ol", "dl", "table", "thead", "tbody", "tfoot", "tr", "html", "body")
MAX_HTML_DEPTH = 256  # deeper pages are flattened to their strings (see html_to_text)
_DROP_TAGS = ("script", "style", "noscript", "template", "svg", "head", "iframe")


def html_to_text(html: str) -> tuple[str | None, str]:
    """(title, text) of an HTML page: headings, list items and table rows become lines."""
    soup = BeautifulSoup(html, "lxml")
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    for tag in soup(_DROP_TAGS):
        tag.decompose()
    if nesting_depth(soup, MAX_HTML_DEPTH) > MAX_HTML_DEPTH:
        # each insertion below walks a tag's descendants: quadratic on deep trees (313 s for
        # 50,000 nested <div>s); such pages get one line per string instead
        return title or None, normalize_whitespace(soup.get_text("\n"))
    for s in soup.find_all(string=True):
        if not s.strip() and s.parent is not None and s.parent.name in _CONTAINER_TAGS:
            s.extract()  # indentation between list items, rows and cells
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
    return title or None, normalize_whitespace(soup.get_text())


def nesting_depth(soup: Any, stop: int) -> int:
    """How deeply tags nest (counted without recursion), or `stop + 1` once it is passed."""
    deepest, stack = 0, [(soup, 0)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > stop:
            return stop + 1
        stack += [(c, depth + 1) for c in getattr(node, "contents", ()) if isinstance(c, Tag)]
    return deepest


def normalize_whitespace(text: str, keep_indent: bool = False) -> str:
    """Unify newlines, trim lines, collapse spaces (unless indenting code), keep paragraphs."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u00a0", " ")
    lines = []
    for raw in text.split("\n"):
        line = raw.rstrip()
        if not keep_indent:
            line = re.sub(r"[ \t\f\v]+", " ", line).strip()
        lines.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def strip_code_comments(code: str, filename: str) -> str:
    """Source without comments (docstrings and definitions kept), via the Pygments lexer."""
    from pygments.lexers import get_lexer_for_filename  # noqa: PLC0415
    from pygments.token import Comment  # noqa: PLC0415
    from pygments.util import ClassNotFound  # noqa: PLC0415

    try:
        lexer = get_lexer_for_filename(filename, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return code
    return "".join(v for t, v in lexer.get_tokens(code) if t not in Comment)


@lru_cache(maxsize=1)
def _nlp(mode: str) -> Any:
    import spacy  # noqa: PLC0415

    nlp = spacy.blank("en")
    if mode == "lemmatize":
        nlp.add_pipe("lemmatizer", config={"mode": "lookup"})
        nlp.initialize()
    return nlp


def normalize_words(text: str, mode: str) -> str:
    """Lemmatize (spaCy lookup tables) or stem (Snowball) each word, whitespace kept."""
    if mode == "none":
        return text
    doc = _nlp(mode)(text)
    if mode == "lemmatize":
        return "".join((t.lemma_ or t.text) + t.whitespace_ for t in doc)
    import snowballstemmer  # noqa: PLC0415

    stem = snowballstemmer.stemmer("english").stemWord
    return "".join((stem(t.text) if t.is_alpha else t.text) + t.whitespace_ for t in doc)


def clean_text(text: str, fmt: str, source: str, cfg: CleanConfig) -> tuple[str | None, str]:
    """(title found in the text, cleaned text) for one document of format `fmt`."""
    title = None
    if cfg.fix_unicode:
        text = ftfy.fix_text(text, normalization="NFC")
    else:
        text = unicodedata.normalize("NFC", text)
    if fmt == "html":
        title, text = html_to_text(text)
    elif fmt == "code":
        if cfg.strip_code_comments:
            text = strip_code_comments(text, Path(source).name)
        text = normalize_whitespace(text, keep_indent=True)
    else:
        text = normalize_whitespace(text)
    if cfg.lowercase:
        text = text.lower()
    return title, normalize_words(text, cfg.normalize_words)


def clean_documents(docs: pa.Table, cfg: CleanConfig) -> tuple[pa.Table, pa.Table]:
    """Clean every document; too-short results go to rejects with their length."""
    rows, rejects = [], []
    for d in docs.select(list(CLEAN_DOCS.columns)).to_pylist():
        found_title, text = clean_text(d["text"], d["format"], d["source"], cfg)
        title = d["title"] or found_title
        if title and d["format"] in ("csv", "jsonl", "parquet", "beir"):
            text = f"{clean_text(title, 'text', d['source'], cfg)[1]}\n\n{text}"
        if len(text) < cfg.min_chars:
            rejects.append({"doc_id": d["doc_id"], "source": d["source"],
                            "reason": f"{len(text)} chars after cleaning "
                                      f"(clean.min_chars={cfg.min_chars})"})
            continue
        rows.append({**d, "title": title, "text": text})
    return (pa.Table.from_pylist(rows, schema=CLEAN_DOCS.schema()),
            pa.Table.from_pylist(rejects, schema=CLEAN_REJECTS.schema()))


@task(name="clean", cache_policy=NO_CACHE)
def clean_task(root: str = ".") -> str:
    """Clean the ingested documents shard by shard (`io.BATCH_ROWS` documents at a time, or
    `run.dask.shard_rows` on Dask), written in input order."""
    run = start_stage("clean", root)
    cfg = run.params.clean
    fp = run.fingerprint()
    changes = run.changes(CLEAN_DOCS, "doc_id", "text")
    with run.output(fp, cfg) as out:
        kept, dropped = out.open_table(CLEAN_DOCS), out.open_table(CLEAN_REJECTS)
        for cleaned, rejects in run.map_shards(clean_documents, INGEST_DOCS, cfg,
                                                    unit="documents"):
            kept.write(cleaned)
            dropped.write(rejects)
            changes.update(cleaned)
        n_in = kept.num_rows + dropped.num_rows
        out.record(rows={"in": n_in, "docs": kept.num_rows, "rejects": dropped.num_rows},
                   changes=changes.counts())
    task_logger().info("clean: %d documents -> %d kept, %d rejected in %.1f s", n_in,
                       kept.num_rows, dropped.num_rows, run.seconds)
    return str(run.out_dir)


if __name__ == "__main__":
    main(clean_task)
