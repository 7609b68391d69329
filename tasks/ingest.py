"""ingest: files under a folder -> `docs.parquet` (one row per document) + `rejects.parquet`.

Schema: doc_id, source, record_key, format, title, text, sha256, size_bytes, metadata (JSON).
Invariant: every selected file (and every record in a tabular file) is in docs or in rejects;
`doc_id` depends only on the relative path and the record key, never on run order.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import BotoCoreError, ClientError
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks import s3
from tasks.config import IngestConfig
from tasks.fingerprint import canonical_json, sha256_bytes, sha256_text, stage_fingerprint
from tasks.io import StageOutput, change_counts, previous_keys
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


def _iter_rows(fmt: str, data: bytes) -> Iterator[tuple[int, dict[str, Any] | Exception]]:
    """(row number, record or the error that row raised) for a tabular file."""
    if fmt == "parquet":
        for i, row in enumerate(pq.read_table(io.BytesIO(data)).to_pylist()):
            yield i, row
        return
    text = decode_text(data)
    if fmt == "csv":
        dialect = "excel-tab" if "\t" in text.split("\n", 1)[0] else "excel"
        for i, row in enumerate(csv.DictReader(io.StringIO(text), dialect=dialect)):
            yield i, (ValueError("more fields than the header") if None in row else row)
        return
    for i, line in enumerate(text.splitlines()):
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


def parse_records(source: str, fmt: str, data: bytes, cfg: IngestConfig
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Documents and rejects from a CSV / JSONL / Parquet file (one document per record)."""
    docs: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, row in _iter_rows(fmt, data):
        if isinstance(row, Exception):
            rejects.append({"source": source, "record_key": f"row-{i}", "reason": str(row)})
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
            rejects.append({"source": source, "record_key": key, "reason": reason})
            continue
        seen.add(key)
        title_col = _first(cols, cfg.title_columns)
        keep = cfg.metadata_columns if cfg.metadata_columns is not None else cols
        meta = {c: row[c] for c in keep if c in row and c not in (text_col, id_col, title_col)}
        title = str(row[title_col]) if title_col and row[title_col] else None
        out_fmt = "beir" if id_col == "_id" else fmt
        docs.append(_doc(source, key, out_fmt, title, str(text), len(str(text)), meta))
    return docs, rejects


def parse_file(source: str, data: bytes, cfg: IngestConfig
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Documents and rejects from one file's bytes; never raises on bad content."""
    fmt = file_format(source, cfg)
    try:
        if fmt is None:
            raise ValueError(f"unsupported file type {Path(source).suffix or '(none)'!r}")
        if len(data) > cfg.max_file_mb * 1e6:
            raise ValueError(f"file larger than ingest.max_file_mb={cfg.max_file_mb}")
        if fmt in RECORD_FORMATS.values():
            docs, rejects = parse_records(source, fmt, data, cfg)
            if not docs and not rejects:
                raise ValueError("empty document")
            return docs, rejects
        meta = {"extension": Path(source).suffix.lower(), "folder": Path(source).parent.name}
        return [_doc(source, "", fmt, None, decode_text(data), len(data), meta)], []
    except (ValueError, pa.ArrowException, csv.Error, OSError) as err:
        return [], [{"source": source, "record_key": "", "reason": str(err)}]


def corpus_digest(file_hashes: dict[str, str]) -> str:
    """One hash over (relative path, content sha256) of every selected file."""
    return sha256_text(canonical_json(sorted(file_hashes.items())))


# Where the files come from does not change the documents: fingerprints leave it out, and
# the corpus digest (relative paths + content) stands for the input.
LOCATION_KEYS = {"source", "s3_endpoint_url", "s3_region", "s3_max_attempts"}


def _local_files(folder: Path, cfg: IngestConfig) -> Iterator[tuple[str, bytes | str, dict]]:
    if not folder.is_dir():
        raise ValueError(f"ingest.source: {folder} is not a folder")
    rels = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    for rel in select_paths(rels, cfg):
        yield rel, (folder / rel).read_bytes(), {}


def _s3_objects(url: str, cfg: IngestConfig) -> Iterator[tuple[str, bytes | str, dict]]:
    """(relative key, bytes or the reason it cannot be read, version facts) per object."""
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
            yield rel, f"{reason}: s3://{bucket}/{key!r}", {}
            continue
        try:
            data, facts = s3.read_object(client, bucket, key)
        except (ClientError, BotoCoreError) as err:
            yield rel, f"{s3.client_error_reason(err)} reading s3://{bucket}/{key}", {}
            continue
        yield rel, data, facts


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_task(root: str = ".") -> str:
    """Read every selected file under `ingest.source` (folder or s3://) into docs + rejects."""
    run = start_stage("ingest", root)
    cfg, log = run.params.ingest, task_logger()
    files = (_s3_objects(cfg.source, cfg) if s3.is_s3(cfg.source)
             else _local_files((run.root / cfg.source).resolve(), cfg))
    docs, rejects, hashes, objects, unreadable = [], [], {}, {}, 0
    for rel, data, facts in files:
        if isinstance(data, str):
            rejects.append({"source": rel, "record_key": "", "reason": data})
            unreadable += 1
            continue
        hashes[rel] = sha256_bytes(data)
        if facts:
            objects[rel] = facts
        d, r = parse_file(rel, data, cfg)
        docs += d
        rejects += r
    digest = corpus_digest(hashes)
    fp = stage_fingerprint("ingest", cfg.model_dump(mode="json", exclude=LOCATION_KEYS), {},
                           {"corpus_sha256": digest})
    docs_table = pa.Table.from_pylist(docs, schema=DOC_SCHEMA)
    changes = change_counts(previous_keys(run.out_dir, "ingest", "docs.parquet", "doc_id",
                                          "text"), docs_table, "doc_id", "text")
    out = StageOutput(run.out_dir, "ingest", fp)
    out.write_table("docs.parquet", docs_table)
    out.write_table("rejects.parquet", pa.Table.from_pylist(rejects, schema=REJECT_SCHEMA))
    n_files = len(hashes) + unreadable
    out.commit(run.manifest(fp, cfg, corpus_sha256=digest, input_files=len(hashes),
                            rows={"docs": len(docs), "rejects": len(rejects)}, changes=changes,
                            objects=objects))
    log.info("ingest: %d files -> %d documents, %d rejected", n_files, len(docs), len(rejects))
    return str(run.out_dir)


if __name__ == "__main__":
    main(ingest_task)
