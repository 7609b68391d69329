"""ingest: files under a folder -> `docs.parquet` (one row per document) + `rejects.parquet`.

Schema: doc_id, source, record_key, format, title, text, sha256, size_bytes, metadata (JSON).
Invariant: every selected file (and every record in a tabular file) is in docs or in rejects;
`doc_id` depends only on the relative path and the record key, never on run order.
"""

from __future__ import annotations

import codecs
import csv
import fnmatch
import io
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import BotoCoreError, ClientError
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks import io as stage_io
from tasks import s3
from tasks.config import IngestConfig
from tasks.fingerprint import (
    canonical_json,
    sha256_bytes,
    sha256_file,
    sha256_text,
    stage_fingerprint,
)
from tasks.io import ChangeCounter, StageOutput, previous_keys
from tasks.runtime import main, start_stage, task_logger

TEXT_FORMATS = {".txt": "text", ".text": "text", ".rst": "text", ".md": "markdown",
                ".markdown": "markdown", ".html": "html", ".htm": "html"}
RECORD_FORMATS = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl",
                  ".parquet": "parquet"}
DOC_SCHEMA = pa.schema([
    ("doc_id", pa.string()), ("source", pa.string()), ("record_key", pa.string()),
    ("format", pa.string()), ("title", pa.string()), ("text", pa.string()),
    ("sha256", pa.string()), ("size_bytes", pa.int64()), ("metadata", pa.string()),
])
REJECT_SCHEMA = pa.schema([
    ("source", pa.string()), ("record_key", pa.string()), ("reason", pa.string()),
])
BLOCK_BYTES = 1 << 20  # bytes read at a time from a tabular file
_LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines splits on
Opener = Callable[[], BinaryIO]


def make_doc_id(source: str, record_key: str) -> str:
    """Stable id from the relative path and the record key (empty for whole files)."""
    return sha256_text(f"{source}\x00{record_key}")[:24]


def _glob_match(path: str, pattern: str) -> bool:
    # fnmatch's '*' crosses '/', so '**/x' also has to match 'x' at the top level.
    return fnmatch.fnmatchcase(path, pattern) or (
        pattern.startswith("**/") and fnmatch.fnmatchcase(path, pattern[3:])
    )


def select_paths(rel_paths: list[str], cfg: IngestConfig) -> list[str]:
    """Relative POSIX paths kept by the include/exclude globs, sorted."""
    return sorted(
        p for p in rel_paths
        if any(_glob_match(p, g) for g in cfg.include)
        and not any(_glob_match(p, g) for g in cfg.exclude)
    )


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


def _split_lines(blocks: Iterable[str]) -> Iterator[str]:
    """`"".join(blocks).splitlines()`, streamed."""
    tail: list[str] = []
    for block in blocks:
        pieces = block.splitlines(keepends=True)
        if len(pieces) == 1 and pieces[0][-1] not in _LINE_BREAKS:
            tail.append(block)  # no break in this block: the line goes on
            continue
        if tail:  # the first piece ends the pending line ('\r' + '\n' is one break)
            pieces[:1] = ("".join(tail) + pieces[0]).splitlines(keepends=True)
        tail = [pieces.pop()]  # the last line may go on in the next block
        for piece in pieces:
            yield piece.splitlines()[0]
    yield from "".join(tail).splitlines()  # a complete line may precede a break-less block


def _split_newlines(blocks: Iterable[str]) -> Iterator[str]:
    """Lines ending in '\n' (kept), as iterating `io.StringIO("".join(blocks))` gives."""
    tail: list[str] = []
    for block in blocks:
        *lines, rest = block.split("\n")
        if lines:
            lines[0] = "".join(tail) + lines[0]
            tail = []
            yield from (line + "\n" for line in lines)
        if rest:
            tail.append(rest)
    if tail:
        yield "".join(tail)


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
    blocks = _decoded_blocks(f)
    if fmt == "csv":
        lines = _split_newlines(blocks)
        header = next(lines, "")
        dialect = "excel-tab" if "\t" in header.split("\n", 1)[0] else "excel"
        reader = csv.DictReader(itertools.chain([header], lines), dialect=dialect)
        for i, row in enumerate(reader):
            yield i, (ValueError("more fields than the header") if None in row else row)
        return
    for i, line in enumerate(_split_lines(blocks)):
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
    """Raise what would make the whole tabular file a reject, before any record is kept:
    text faults first (over the whole file, as decoding it whole would), then CSV / Parquet
    faults. `f` and `g` are two fresh reads of the file."""
    if fmt != "parquet":
        for _ in _decoded_blocks(f):
            pass
    if fmt != "jsonl":  # JSON faults are per line, never the file's
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
    content. A tabular file is checked whole first, then streamed record by record, so it is
    never held in memory; a fault anywhere in it makes it one reject, as before any streaming.
    """
    fmt = file_format(source, cfg)
    try:
        if fmt is None:
            raise ValueError(f"unsupported file type {Path(source).suffix or '(none)'!r}")
        if size > cfg.max_file_mb * 1e6:
            raise ValueError(f"file larger than ingest.max_file_mb={cfg.max_file_mb}")
        if fmt in RECORD_FORMATS.values():
            with open_file() as f, open_file() as g:
                check_records(fmt, f, g)
        else:
            with open_file() as f:
                text = decode_text(f.read())
    except (ValueError, pa.ArrowException, csv.Error, OSError) as err:
        yield False, {"source": source, "record_key": "", "reason": str(err)}
        return
    if fmt not in RECORD_FORMATS.values():
        meta = {"extension": Path(source).suffix.lower(), "folder": Path(source).parent.name}
        yield True, _doc(source, "", fmt, None, text, size, meta)
        return
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


def corpus_digest(file_hashes: dict[str, str]) -> str:
    """One hash over (relative path, content sha256) of every selected file."""
    return sha256_text(canonical_json(sorted(file_hashes.items())))


# Where the files come from does not change the documents: fingerprints leave it out, and
# the corpus digest (relative paths + content) stands for the input.
LOCATION_KEYS = {"source", "s3_endpoint_url", "s3_region", "s3_max_attempts"}


def ingest_fingerprint(cfg: IngestConfig, file_hashes: dict[str, str]) -> str:
    """The stage fingerprint: config (location aside) and the corpus digest."""
    return stage_fingerprint("ingest", cfg.model_dump(mode="json", exclude=LOCATION_KEYS), {},
                             {"corpus_sha256": corpus_digest(file_hashes)})


class SourceFile(NamedTuple):
    """One selected file: how to read it (or why it cannot be read), its size and hash."""

    rel: str
    open: Opener | str
    size: int = 0
    sha256: str = ""
    facts: dict[str, Any] | None = None


def _local_files(folder: Path, cfg: IngestConfig) -> Iterator[SourceFile]:
    if not folder.is_dir():
        raise ValueError(f"ingest.source: {folder} is not a folder")
    rels = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    for rel in select_paths(rels, cfg):
        path = folder / rel
        yield SourceFile(rel, lambda p=path: open(p, "rb"), path.stat().st_size,
                         sha256_file(path))


def _s3_objects(url: str, cfg: IngestConfig) -> Iterator[SourceFile]:
    """(relative key, bytes or the reason it cannot be read, version facts) per object.

    An object is held whole while it is parsed (it is read in one GET).
    """
    bucket, prefix = s3.parse_s3_url(url)
    client = s3.make_client(s3.S3Settings(cfg.s3_endpoint_url, cfg.s3_region,
                                          cfg.s3_max_attempts))
    cut = len(prefix) + 1 if prefix else 0  # the prefix and its one separating slash
    objects = {o["key"][cut:]: o for o in s3.list_objects(client, bucket, prefix)}
    seen: dict[str, str] = {}
    for rel in select_paths(list(objects), cfg):
        key = objects[rel]["key"]
        reason = s3.unsafe_key_reason(rel)
        norm = s3.normalised_key(rel)
        if reason is None and norm in seen:
            reason = f"key collides with {seen[norm]!r} after normalisation"
        seen.setdefault(norm, rel)
        if reason:
            yield SourceFile(rel, f"{reason}: s3://{bucket}/{key!r}")
            continue
        try:
            data, facts = s3.read_object(client, bucket, key)
        except (ClientError, BotoCoreError) as err:
            yield SourceFile(rel, f"{s3.client_error_reason(err)} reading s3://{bucket}/{key}")
            continue
        yield SourceFile(rel, lambda d=data: io.BytesIO(d), len(data), sha256_bytes(data), facts)


class _Batches:
    """Rows gathered into batches of `io.BATCH_ROWS` before they go to their table."""

    def __init__(self, writer: stage_io.TableWriter, on_flush: Callable[[pa.Table], None]
                 | None = None) -> None:
        self.writer, self.on_flush, self.rows, self.count = writer, on_flush, [], 0

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.count += 1
        if len(self.rows) >= stage_io.BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            table = pa.Table.from_pylist(self.rows, schema=self.writer.schema)
            self.writer.write(table)
            if self.on_flush is not None:
                self.on_flush(table)
        self.rows = []


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_task(root: str = ".") -> str:
    """Read every selected file under `ingest.source` (folder or s3://) into docs + rejects,
    streamed: documents go to Parquet in batches as they are read."""
    run = start_stage("ingest", root)
    cfg, log = run.params.ingest, task_logger()
    # Local files are hashed up front, so the tables are stamped as they are written; S3
    # objects are read once, so their tables are restamped once the last one is hashed.
    files: Iterable[SourceFile]
    if s3.is_s3(cfg.source):
        files, fp = _s3_objects(cfg.source, cfg), None
    else:
        files = list(_local_files((run.root / cfg.source).resolve(), cfg))
        fp = ingest_fingerprint(cfg, {f.rel: f.sha256 for f in files})
    changes = ChangeCounter(previous_keys(run.out_dir, "ingest", "docs.parquet", "doc_id",
                                          "text"))
    out = StageOutput(run.out_dir, "ingest", fp)
    try:
        docs = _Batches(out.open_table("docs.parquet", DOC_SCHEMA),
                        lambda t: changes.update(t, "doc_id", "text"))
        rejects = _Batches(out.open_table("rejects.parquet", REJECT_SCHEMA))
        hashes, objects, unreadable = {}, {}, 0
        for f in files:
            if isinstance(f.open, str):
                rejects.add({"source": f.rel, "record_key": "", "reason": f.open})
                unreadable += 1
                continue
            hashes[f.rel] = f.sha256
            if f.facts:
                objects[f.rel] = f.facts
            for is_doc, row in iter_file(f.rel, f.open, f.size, cfg):
                (docs if is_doc else rejects).add(row)
        docs.flush()
        rejects.flush()
        digest, fp = corpus_digest(hashes), ingest_fingerprint(cfg, hashes)
        out.set_fingerprint(fp)
        out.commit(run.manifest(fp, cfg, corpus_sha256=digest, input_files=len(hashes),
                                rows={"docs": docs.count, "rejects": rejects.count},
                                changes=changes.counts(), objects=objects))
    except BaseException:
        out.abort()
        raise
    log.info("ingest: %d files -> %d documents, %d rejected", len(hashes) + unreadable,
             docs.count, rejects.count)
    return str(run.out_dir)


if __name__ == "__main__":
    main(ingest_task)
