"""ingest: files under a folder or S3 prefix -> `docs.parquet` (one row per document) +
`rejects.parquet`.

Schema: doc_id, source, record_key, format, title, text, sha256, size_bytes, metadata (JSON).
Invariant: every selected file (and every record in a tabular file) is in docs or in rejects;
`doc_id` depends only on the relative path and the record key, never on run order.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tasks.core.catalog import INGEST_DOCS, INGEST_REJECTS
from tasks.core.config import IngestConfig
from tasks.core.fingerprint import canonical_json, sha256_text
from tasks.core.io import RowBatches
from tasks.core.progress import Progress, counted, task_logger
from tasks.core.result_cache import ResultCache, document_key
from tasks.core.runtime import StageRun, main, stage_task, start_stage
from tasks.documents.decoding import iter_file
from tasks.documents.sources import KnownHash, SourceFile, source_files, stat_key
from tasks.storage.s3 import is_s3

# Files up to this size keep their parsed rows in the result cache; a larger one (a JSONL or
# CSV corpus, a long text in parts) is streamed, never held whole, so it is parsed each run.
CACHED_FILE_BYTES = 4 << 20


def corpus_digest(file_hashes: dict[str, str]) -> str:
    """One hash over (relative path, content sha256) of every selected file."""
    return sha256_text(canonical_json(sorted(file_hashes.items())))


def ingest_fingerprint(run: StageRun, file_hashes: dict[str, str]) -> str:
    """The stage fingerprint: its declared params (where the files come from aside: the
    registry lists the location keys as neutral) and the corpus digest."""
    return run.fingerprint(corpus_sha256=corpus_digest(file_hashes))


def readable_hashes(files: Iterable[SourceFile]) -> dict[str, str]:
    """Relative name -> content sha256 of the files that can be read (the corpus digest's
    input; unreadable ones are rejects)."""
    return {f.rel: f.sha256 for f in files if not isinstance(f.open, str)}


@dataclass
class CorpusTally:
    """What the files read so far were: content hashes, S3 version facts, unreadable count."""

    hashes: dict[str, str] = field(default_factory=dict)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    unreadable: int = 0

    def facts(self, docs: int, rejects: int) -> dict[str, Any]:
        """The manifest's account of the corpus."""
        return {"corpus_sha256": corpus_digest(self.hashes), "input_files": len(self.hashes),
                "rows": {"docs": docs, "rejects": rejects}, "objects": self.objects}


def ingest_rows(files: Iterable[SourceFile], cfg: IngestConfig, tally: CorpusTally,
                parsed: ResultCache | None = None) -> Iterator[tuple[bool, dict[str, Any]]]:
    """(is a document, document or reject row) for every file in order; `tally` is updated
    as each file is read. A file `parsed` holds the rows of (same name, same bytes, same
    params and code) is not parsed again."""
    for f in files:
        if isinstance(f.open, str):
            tally.unreadable += 1
            yield False, {"source": f.rel, "record_key": "", "reason": f.open}
            continue
        tally.hashes[f.rel] = f.sha256
        if f.facts:
            tally.objects[f.rel] = f.facts
        if parsed is None or f.size > CACHED_FILE_BYTES:
            yield from iter_file(f.rel, f.open, f.size, cfg)
            continue
        key = document_key(f.rel, f.sha256)
        rows = parsed.get([key])[0]
        if rows is None:
            rows = [[is_doc, row] for is_doc, row in iter_file(f.rel, f.open, f.size, cfg)]
            parsed.put([key], [rows])
        yield from ((is_doc, row) for is_doc, row in rows)


def known_hashes(stats: ResultCache) -> KnownHash:
    """A file's sha256 from `stats` when its name and `stat_key` are those of a file read
    before (then it is not read again), recording every hash it is asked about."""
    def known(rel: str, st: os.stat_result) -> str | None:
        key = document_key(rel, *map(str, stat_key(st)))
        return stats.get([key])[0]

    return known


def hashed_sources(run: StageRun, stats: ResultCache) -> list[SourceFile] | Iterable[SourceFile]:
    """`source_files` of `ingest.source`, a local file whose name and stat `stats` knows
    not read for its hash; each local file's hash is remembered there for the next run."""
    files = source_files(run.params.ingest, run.root, known_hashes(stats))
    if isinstance(files, list):
        done = [f for f in files if not isinstance(f.open, str) and f.stat is not None]
        stats.put([document_key(f.rel, *map(str, f.stat)) for f in done],
                  [f.sha256 for f in done])
    return files


@stage_task("ingest")
def ingest_task(root: str = ".") -> str:
    """Read every selected file under `ingest.source` (folder or s3://) into docs + rejects,
    streamed: documents go to Parquet in batches as they are read."""
    run = start_stage("ingest", root)
    cfg, tally = run.params.ingest, CorpusTally()
    stats, parsed = run.result_cache("stat"), run.result_cache("files")
    files = hashed_sources(run, stats)
    # Local files are hashed up front, so the tables are stamped as they are written; S3
    # objects are read once, so their tables are restamped once the last one is hashed.
    fp = None if is_s3(cfg.source) else ingest_fingerprint(run, readable_hashes(files))
    changes = run.changes(INGEST_DOCS, "doc_id", "text")
    with run.output(fp, cfg) as out:
        docs = RowBatches(out.open_table(INGEST_DOCS), changes.update)
        rejects = RowBatches(out.open_table(INGEST_REJECTS))
        with Progress("ingest", len(files) if isinstance(files, list) else 0,
                      "files") as bar:
            for is_doc, row in ingest_rows(counted(files, bar), cfg, tally, parsed):
                (docs if is_doc else rejects).add(row)
        docs.flush()
        rejects.flush()
        out.set_fingerprint(ingest_fingerprint(run, tally.hashes))
        out.record(**tally.facts(docs.count, rejects.count), changes=changes.counts(),
                   reuse={"files": parsed.close(), "hashes": stats.close()},
                   cache_dropped=parsed.dropped | stats.dropped)
    task_logger().info("ingest: %d files -> %d documents, %d rejected in %.1f s",
                       len(tally.hashes) + tally.unreadable, docs.count, rejects.count,
                       run.seconds)
    return str(run.out_dir)


if __name__ == "__main__":
    main(ingest_task)
