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

from tasks.core.catalog import CLEAN_DOCS, CLEAN_REJECTS, INGEST_DOCS
from tasks.core.config import CleanConfig
from tasks.core.progress import task_logger
from tasks.core.result_cache import document_key
from tasks.core.runtime import main, stage_task, start_stage
from tasks.documents.html import html_to_text
from tasks.documents.sentences import import_spacy

_READS = ("text", "format", "source", "title")  # what decides a document's cleaned result
# a line of printable ASCII, tabs and no '&' is one ftfy leaves as it is: never handed to it
_NOT_PLAIN_ASCII = re.compile(r"[^\t\n\x20-\x25\x27-\x7e]")


@lru_cache(maxsize=1)
def _ftfy_acts_on() -> re.Pattern[str]:
    """The characters one of ftfy's character fixes changes (its own tables): C1 and other
    controls, ligatures, full/half width forms, curly quotes, line breaks, surrogates."""
    from ftfy import chardata  # noqa: PLC0415

    codes = {*chardata.LIGATURES, *chardata.WIDTH_MAP, *chardata.CONTROL_CHARS,
             *range(0x80, 0xA0), 0x0D, 0x1B, 0x2028, 0x2029}
    quotes = chardata.SINGLE_QUOTE_RE.pattern[1:-1] + chardata.DOUBLE_QUOTE_RE.pattern[1:-1]
    return re.compile("[" + "".join(re.escape(chr(c)) for c in sorted(codes)) + quotes
                      + "\ud800-\udfff]")


def _ftfy_keeps(line: str, unescape_html: bool) -> bool:
    """True when `ftfy.fix_text` would return `line` unchanged: no character a fix acts on,
    no mojibake by ftfy's own test, NFC already, and no entity to decode."""
    from ftfy.badness import is_bad  # noqa: PLC0415

    return not ((unescape_html and "&" in line) or _ftfy_acts_on().search(line)
                or is_bad(line)) and unicodedata.is_normalized("NFC", line)


def repair_unicode(text: str, unescape_html: bool | str = "auto") -> str:
    """`ftfy.fix_text(text, normalization="NFC")`, line by line as ftfy works, with the lines
    it would leave unchanged passed over: the same text, several times faster."""
    config = ftfy.TextFixerConfig(normalization="NFC", unescape_html=unescape_html)
    first_lt = text.find("<") if unescape_html == "auto" else -1
    out, pos = [], 0
    while found := _NOT_PLAIN_ASCII.search(text, pos):
        start = text.rfind("\n", pos, found.start()) + 1 or pos
        end = text.find("\n", found.start()) + 1 or len(text)
        if end - start > config.max_decode_length:
            return ftfy.fix_text(text, config)  # ftfy cuts such a line where it likes
        if unescape_html == "auto" and -1 < first_lt < end:
            config = config._replace(unescape_html=False)  # as ftfy: once a "<" is seen
        line = text[start:end]
        if not _ftfy_keeps(line, bool(config.unescape_html)):
            out += [text[pos:start], ftfy.fix_text(line, config)]
            pos = end
        else:
            out.append(text[pos:end])
            pos = end
    out.append(text[pos:])
    return "".join(out)


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
    nlp = import_spacy().blank("en")
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
    if fmt == "html":  # repaired after extraction: the text is a fraction of the markup
        title, text = html_to_text(text, cfg.html_main_content)
        # the parser decoded the entities: an "&amp;" still in the text is meant
        title = _repair(title, cfg, unescape_html=False) if title else None
        text = _repair(text, cfg, unescape_html=False)
    elif fmt == "code":
        text = _repair(text, cfg, unescape_html="auto")
        if cfg.strip_code_comments:
            text = strip_code_comments(text, Path(source).name)
        text = normalize_whitespace(text, keep_indent=True)
    else:
        text = normalize_whitespace(_repair(text, cfg, unescape_html="auto"))
    if cfg.lowercase:
        text = text.lower()
    return title, normalize_words(text, cfg.normalize_words)


def _repair(text: str, cfg: CleanConfig, unescape_html: bool | str) -> str:
    if cfg.fix_unicode:
        return repair_unicode(text, unescape_html)
    return unicodedata.normalize("NFC", text)


def clean_result(d: dict[str, Any], cfg: CleanConfig) -> dict[str, str | None]:
    """One ingested document's cleaned `title` and `text`, or the `reason` it is rejected
    (too short once cleaned): what the result cache keeps per document."""
    found_title, text = clean_text(d["text"], d["format"], d["source"], cfg)
    title = d["title"] or found_title
    if title and d["format"] in ("csv", "jsonl", "parquet", "beir"):
        text = f"{clean_text(title, 'text', d['source'], cfg)[1]}\n\n{text}"
    if len(text) < cfg.min_chars:
        return {"reason": f"{len(text)} chars after cleaning (clean.min_chars={cfg.min_chars})"}
    return {"title": title, "text": text}


def clean_results(docs: pa.Table, cfg: CleanConfig) -> list[dict[str, str | None]]:
    """`clean_result` of every document, in order."""
    return [clean_result(d, cfg) for d in docs.select(list(_READS)).to_pylist()]


def document_keys(docs: pa.Table) -> list[str]:
    """Each document's result-cache key: everything `clean_result` reads of it."""
    return [document_key(*row) for row in zip(*(docs.column(c).to_pylist() for c in _READS),
                                              strict=True)]


def cleaned_tables(docs: pa.Table, results: list[dict[str, str | None]]
                   ) -> tuple[pa.Table, pa.Table]:
    """(kept documents, rejects) from the documents and their `clean_result`s, in order."""
    rows, rejects = [], []
    for d, r in zip(docs.select(list(CLEAN_DOCS.columns)).to_pylist(), results, strict=True):
        if "reason" in r:
            rejects.append({"doc_id": d["doc_id"], "source": d["source"],
                            "reason": r["reason"]})
        else:
            rows.append({**d, "title": r["title"], "text": r["text"]})
    return (pa.Table.from_pylist(rows, schema=CLEAN_DOCS.schema()),
            pa.Table.from_pylist(rejects, schema=CLEAN_REJECTS.schema()))


def clean_documents(docs: pa.Table, cfg: CleanConfig) -> tuple[pa.Table, pa.Table]:
    """Clean every document; too-short results go to rejects with their length."""
    return cleaned_tables(docs, clean_results(docs, cfg))


@stage_task("clean")
def clean_task(root: str = ".") -> str:
    """Clean the ingested documents shard by shard (`io.BATCH_ROWS` documents at a time, or
    `run.dask.shard_rows` on Dask), written in input order; a document whose result the
    result cache holds (same fields, params and code) is not cleaned again."""
    run = start_stage("clean", root)
    cfg = run.params.clean
    fp = run.fingerprint()
    changes = run.changes(CLEAN_DOCS, "doc_id", "text")
    cache = run.result_cache()
    with run.output(fp, cfg) as out:
        kept, dropped = out.open_table(CLEAN_DOCS), out.open_table(CLEAN_REJECTS)
        for docs, results in run.map_cached(clean_results, INGEST_DOCS, document_keys, cache,
                                            cfg, unit="documents"):
            cleaned, rejects = cleaned_tables(docs, results)
            kept.write(cleaned)
            dropped.write(rejects)
            changes.update(cleaned)
        n_in = kept.num_rows + dropped.num_rows
        out.record(rows={"in": n_in, "docs": kept.num_rows, "rejects": dropped.num_rows},
                   changes=changes.counts(), reuse=cache.close(),
                   cache_dropped=cache.dropped)
    task_logger().info("clean: %d documents -> %d kept, %d rejected in %.1f s", n_in,
                       kept.num_rows, dropped.num_rows, run.seconds)
    return str(run.out_dir)


if __name__ == "__main__":
    main(clean_task)
