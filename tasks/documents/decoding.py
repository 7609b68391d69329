"""Bytes -> documents: streamed UTF-8 checks and the format readers.

A whole file (text, Markdown, HTML, code) is one document, or several parts when it is longer
than `ingest.max_doc_mb` (cut at paragraph, line or word breaks; never truncated); a tabular
file (CSV, TSV, JSONL, Parquet, a BEIR corpus) is one document per record. Bad content never
raises: it becomes a reject row naming the file, the record and the reason. Tabular and long
text files are streamed in blocks of `BLOCK_BYTES`, never held whole.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, AnyStr, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.core.config import IngestConfig
from tasks.core.fingerprint import canonical_json, sha256_text

TEXT_FORMATS = {".txt": "text", ".text": "text", ".rst": "text", ".md": "markdown",
                ".markdown": "markdown", ".html": "html", ".htm": "html"}
RECORD_FORMATS = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl",
                  ".parquet": "parquet"}
BLOCK_BYTES = 1 << 20  # bytes read at a time from a tabular file
Opener = Callable[[], BinaryIO]


def make_doc_id(source: str, record_key: str) -> str:
    """Stable id from the relative path and the record key (empty for whole files)."""
    return sha256_text(f"{source}\x00{record_key}")[:24]


def file_format(rel_path: str, cfg: IngestConfig) -> str | None:
    """'text', 'markdown', 'html', 'code', 'csv', 'jsonl', 'parquet' or None (unsupported)."""
    ext = Path(rel_path).suffix.lower()
    if ext in cfg.code_extensions:
        return "code"
    return TEXT_FORMATS.get(ext) or RECORD_FORMATS.get(ext)


def decode_text(data: bytes) -> str:
    """Strict UTF-8 (BOM dropped); ValueError says why the bytes are not text."""
    if b"\x00" in data[:8192]:
        raise ValueError("binary content (NUL bytes)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not text.strip():
        raise ValueError("empty document")
    return text


def _doc(source: str, key: str, fmt: str, title: str | None, text: str,
         size: int, metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "doc_id": make_doc_id(source, key), "source": source, "record_key": key,
        "format": fmt, "title": title, "text": text, "sha256": sha256_text(text),
        "size_bytes": size, "metadata": canonical_json(metadata),
    }


def _first(columns: list[str], wanted: tuple[str, ...]) -> str | None:
    return next((c for c in wanted if c in columns), None)


def _raw_blocks(f: BinaryIO) -> Iterator[bytes]:
    """The bytes of a stream after its BOM, in blocks; NUL bytes at its start refused first."""
    head = f.read(8192)
    if b"\x00" in head:
        raise ValueError("binary content (NUL bytes)")
    if head.startswith(codecs.BOM_UTF8):
        head = head[len(codecs.BOM_UTF8):]
    for i in range(0, len(head), BLOCK_BYTES):
        yield head[i:i + BLOCK_BYTES]
    while block := f.read(BLOCK_BYTES):
        yield block


def _decoded_blocks(f: BinaryIO) -> Iterator[str]:
    """The text of a UTF-8 stream block by block, with `decode_text`'s checks and messages
    (a fault surfaces when its block is reached; blank text fails at the end)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    fed, blank = 0, True  # fed: bytes after the BOM given to the decoder so far
    blocks = _raw_blocks(f)
    block = next(blocks, b"")
    while True:
        following = next(blocks, b"")
        held = len(decoder.getstate()[0])  # an incomplete character from the last block
        try:
            text = decoder.decode(block, final=not following)
        except UnicodeDecodeError as err:
            at = fed - held + err.start
            raise ValueError(f"not UTF-8 text ({err.reason} at byte {at})") from None
        fed += len(block)
        blank = blank and (not text or text.isspace())
        if text:
            yield text
        if not following:
            break
        block = following
    if blank:
        raise ValueError("empty document")


def _cut(text: str, limit: int) -> int:
    """Where the first part of `text` ends: after the last paragraph break within `limit`
    characters, else the last line break, else the last space; `limit` when none."""
    window = text[:limit]
    for sep in ("\n\n", "\n", " "):
        at = window.rfind(sep)
        if at > 0:
            return at + len(sep)
    return limit


def text_parts(blocks: Iterable[str], limit: int) -> Iterator[str]:
    """The text of `blocks` in parts of at most `limit` characters whose concatenation is the
    text (`_cut`); at most `limit` plus one block is held at once."""
    pending = ""
    for block in blocks:
        pending += block
        while len(pending) > limit:
            cut = _cut(pending, limit)
            yield pending[:cut]
            pending = pending[cut:]
    if pending:
        yield pending


def _split_newlines(blocks: Iterable[AnyStr]) -> Iterator[AnyStr]:
    """Lines ending in '\n' (kept), as iterating `io.StringIO("".join(blocks))` gives; of
    text blocks or of raw bytes alike."""
    tail: list[AnyStr] = []
    for block in blocks:
        newline = b"\n" if isinstance(block, bytes) else "\n"
        *lines, rest = block.split(newline)
        if lines:
            lines[0] = newline[:0].join(tail) + lines[0]
            tail = []
            yield from (line + newline for line in lines)
        if rest:
            tail.append(rest)
    if tail:
        yield tail[0][:0].join(tail)


def _iter_rows(fmt: str, f: BinaryIO) -> Iterator[tuple[int, dict[str, Any] | Exception]]:
    """(row number, record or the error that row raised) of a tabular file, streamed."""
    if fmt == "parquet":
        try:
            pf = pq.ParquetFile(f)
        except pa.ArrowInvalid as err:  # worded as pq.read_table words it, as rejects were
            raise pa.ArrowInvalid(f"Could not open Parquet input source '<Buffer>': {err}"
                                  ) from None
        rows = (row for batch in pf.iter_batches(batch_size=1024) for row in batch.to_pylist())
        yield from enumerate(rows)
        return
    if fmt == "csv":
        lines = _split_newlines(_decoded_blocks(f))
        header = next(lines, "")
        dialect = "excel-tab" if "\t" in header.split("\n", 1)[0] else "excel"
        reader = csv.DictReader(itertools.chain([header], lines), dialect=dialect)
        for i, row in enumerate(reader):
            yield i, (ValueError("more fields than the header") if None in row else row)
        return
    # each line decoded on its own: a line that is not UTF-8 is that line's reject
    for i, raw in enumerate(_split_newlines(_raw_blocks(f))):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            yield i, ValueError(f"line {i + 1}: not UTF-8 ({err.reason} at byte {err.start} "
                                "of the line)")
            continue
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            yield i, ValueError(f"line {i + 1}: invalid JSON ({err.msg})")
            continue
        yield i, obj if isinstance(obj, dict) else ValueError(
            f"line {i + 1}: expected a JSON object, got {type(obj).__name__}"
        )


def check_records(fmt: str, f: BinaryIO, g: BinaryIO) -> None:
    """Raise what would make the whole tabular file a reject, before any record is kept: for
    CSV, text faults (over the whole file, as decoding it whole would), then CSV faults; for
    Parquet, its faults; for JSONL, only NUL bytes at its start (a line's faults are that
    line's). `f` and `g` are two fresh reads of the file."""
    if fmt == "csv":
        for _ in _decoded_blocks(f):
            pass
    if fmt == "jsonl":
        next(_raw_blocks(f), None)
    else:
        for _ in _iter_rows(fmt, g):
            pass


def iter_records(source: str, fmt: str, f: BinaryIO, cfg: IngestConfig
                 ) -> Iterator[tuple[bool, dict[str, Any]]]:
    """(is a document, document or reject row) per record of a CSV / JSONL / Parquet file."""
    seen: set[str] = set()
    for i, row in _iter_rows(fmt, f):
        if isinstance(row, Exception):
            yield False, {"source": source, "record_key": f"row-{i}", "reason": str(row)}
            continue
        cols = list(row)
        text_col, id_col = _first(cols, cfg.text_columns), _first(cols, cfg.id_columns)
        key = str(row[id_col]) if id_col and row[id_col] not in (None, "") else f"row-{i}"
        text = row.get(text_col) if text_col else None
        reason = (
            f"no text column (looked for {list(cfg.text_columns)}, found {cols})"
            if text_col is None else
            f"empty text in column {text_col!r}" if not str(text or "").strip() else
            f"duplicate record key {key!r} in column {id_col!r}" if key in seen else None
        )
        if reason:
            yield False, {"source": source, "record_key": key, "reason": reason}
            continue
        seen.add(key)
        title_col = _first(cols, cfg.title_columns)
        keep = cfg.metadata_columns if cfg.metadata_columns is not None else cols
        meta = {c: row[c] for c in keep if c in row and c not in (text_col, id_col, title_col)}
        title = str(row[title_col]) if title_col and row[title_col] else None
        out_fmt = "beir" if id_col == "_id" else fmt
        yield True, _doc(source, key, out_fmt, title, str(text), len(str(text)), meta)


def iter_file(source: str, open_file: Opener, size: int, cfg: IngestConfig
              ) -> Iterator[tuple[bool, dict[str, Any]]]:
    """(is a document, document or reject row) of one file, in order; never raises on bad
    content. A tabular file, or a text file over `max_doc_mb`, is checked whole first, then
    streamed record by record or part by part, so it is never held in memory; a fault
    anywhere in it makes it one reject, as before any streaming.
    """
    fmt = file_format(source, cfg)
    try:
        if fmt is None:
            raise ValueError(f"unsupported file type {Path(source).suffix or '(none)'!r}")
        if size > cfg.max_file_mb * 1e6:
            raise ValueError(f"file larger than ingest.max_file_mb={cfg.max_file_mb}")
        if fmt in RECORD_FORMATS.values():
            # a field may be as long as a file may be (csv's default is 128 KiB)
            csv.field_size_limit(max(csv.field_size_limit(), int(cfg.max_file_mb * 1e6)))
            with open_file() as f, open_file() as g:
                check_records(fmt, f, g)
        elif size > cfg.max_doc_mb * 1e6:
            with open_file() as f:
                parts = sum(1 for _ in text_parts(_decoded_blocks(f), _part_chars(cfg)))
        else:
            with open_file() as f:
                text = decode_text(f.read())
    except (ValueError, pa.ArrowException, csv.Error, OSError) as err:
        yield False, {"source": source, "record_key": "", "reason": str(err)}
        return
    meta = {"extension": Path(source).suffix.lower(), "folder": Path(source).parent.name}
    if fmt in RECORD_FORMATS.values():
        yield from _records(source, fmt, open_file, cfg)
    elif size > cfg.max_doc_mb * 1e6:
        with open_file() as f:
            for i, part in enumerate(text_parts(_decoded_blocks(f), _part_chars(cfg))):
                yield True, _doc(source, f"part-{i + 1:05d}", fmt, None, part,
                                 len(part.encode("utf-8")), {**meta, "part": i + 1,
                                                              "parts": parts})
    else:
        yield True, _doc(source, "", fmt, None, text, size, meta)


def _part_chars(cfg: IngestConfig) -> int:
    return max(int(cfg.max_doc_mb * 1e6), 1)


def _records(source: str, fmt: str, open_file: Opener, cfg: IngestConfig
             ) -> Iterator[tuple[bool, dict[str, Any]]]:
    empty = True
    with open_file() as f:
        for item in iter_records(source, fmt, f, cfg):
            empty = False
            yield item
    if empty:
        yield False, {"source": source, "record_key": "", "reason": "empty document"}


def parse_file(source: str, data: bytes, cfg: IngestConfig
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Documents and rejects from one file's bytes; never raises on bad content."""
    docs: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    for is_doc, row in iter_file(source, lambda: io.BytesIO(data), len(data), cfg):
        (docs if is_doc else rejects).append(row)
    return docs, rejects
