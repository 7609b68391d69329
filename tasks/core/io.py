"""Stage output folders: stamped Parquet files plus `_manifest.json`, swapped in atomically.

A stage output is complete or absent: files are written into a hidden sibling folder and
the folder replaces the old one in one rename. Readers check the stamps they rely on.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import shutil
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.core.catalog import MANIFEST, StageFile
from tasks.core.fingerprint import sha256_file, sha256_text

STAMP_KEY = b"embedpipe.fingerprint"
STAGE_KEY = b"embedpipe.stage"
# Streaming: rows (or bytes, whichever comes first) per batch read from an input or gathered
# for a table, and the bounds of one written row group. Memory per stage is a few of these.
BATCH_ROWS = 1024
BATCH_BYTES = 16 << 20
ROW_GROUP_ROWS = 65_536
ROW_GROUP_BYTES = 4 << 20
_VERSIONED = (
    "embedpipe", "pyarrow", "numpy", "faiss-cpu", "faiss-gpu-cu12", "torch",
    "sentence-transformers", "transformers", "tokenizers", "onnxruntime", "onnx", "openvino",
    "nncf", "bm25s", "scikit-learn", "spacy", "prefect", "dvc", "ftfy", "selectolax",
    "pygments", "snowballstemmer", "PyStemmer",
)


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape outputs, for manifests."""
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists and is not a zombie (a leftover's writer may
    still be at work; a killed one whose parent died waits, a zombie, until init reaps it,
    which in a container can take a while)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: the state letter follows the parenthesised command name
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _remove_dead_leftovers(out_dir: Path) -> None:
    """Drop temporary folders left by killed runs (their pid no longer exists)."""
    for leftover in out_dir.parent.glob(f".{out_dir.name}.*-*"):
        pid = leftover.name.rsplit("-", 1)[-1]
        if pid.isdigit() and (int(pid) == os.getpid() or not pid_alive(int(pid))):
            shutil.rmtree(leftover, ignore_errors=True)


class TableWriter:
    """One Parquet file written batch by batch; row groups hold at most `row_group_rows` rows
    or about `row_group_bytes` of Arrow data, so memory stays bounded whatever the row count.
    """

    def __init__(self, path: Path, schema: pa.Schema, row_group_rows: int,
                 row_group_bytes: int) -> None:
        self.path = path
        self.schema = schema
        self.row_group_rows = row_group_rows
        self.row_group_bytes = row_group_bytes
        self.num_rows = 0
        self._writer = pq.ParquetWriter(path, schema, compression="zstd")
        self._pending: list[pa.Table] = []
        self._pending_rows = self._pending_bytes = 0

    def write(self, data: pa.Table | pa.RecordBatch) -> None:
        """Append rows (their schema must be the file's, metadata aside)."""
        table = data if isinstance(data, pa.Table) else pa.Table.from_batches([data])
        if not table.schema.equals(self.schema, check_metadata=False):
            raise TypeError(f"{self.path.name}: rows have schema {table.schema}, "
                            f"the file has {self.schema}")
        self.num_rows += table.num_rows
        while table.num_rows:
            take = min(table.num_rows, self.row_group_rows - self._pending_rows)
            part, table = table.slice(0, take), table.slice(take)
            self._pending.append(part)
            self._pending_rows += take
            self._pending_bytes += part.nbytes
            if (self._pending_rows >= self.row_group_rows
                    or self._pending_bytes >= self.row_group_bytes):
                self._flush()

    def _flush(self) -> None:
        if self._pending_rows:
            group = pa.concat_tables(self._pending)
            try:
                self._writer.write_table(group, row_group_size=group.num_rows)
            except OSError as err:
                raise_disk_full_at(err, self.path)
                raise
        self._pending, self._pending_rows, self._pending_bytes = [], 0, 0

    def close(self) -> None:
        """Write the last row group and the footer (idempotent)."""
        if self._writer is not None:
            self._flush()
            self._writer.close()
            self._writer = None

    def discard(self) -> None:
        """Drop the pending rows and let go of the file, writing nothing more: after a
        failed write (a full disk) a flush would fail again and hide the first error."""
        self._pending, self._pending_rows, self._pending_bytes = [], 0, 0
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except OSError:  # the footer cannot be written either; the file is dropped
                pass


class StageOutput:
    """Collects one stage's files in a temporary folder, then swaps it in whole.

    Args:
        out_dir: the stage's output folder (replaced on `commit`).
        stage: stage name, stamped on every file.
        fingerprint: the stage fingerprint, stamped on every file. None when it is known only
            once the input has been read (ingest): set it with `set_fingerprint` before
            `commit`; tables opened before that are restamped row group by row group.
    """

    def __init__(self, out_dir: Path, stage: str, fingerprint: str | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.stage = stage
        self.fingerprint = fingerprint
        self.tmp_dir = self.out_dir.with_name(f".{self.out_dir.name}.tmp-{os.getpid()}")
        self.facts: dict[str, Any] = {}
        self._writers: dict[str, TableWriter] = {}
        _remove_dead_leftovers(self.out_dir)
        self.tmp_dir.mkdir(parents=True)

    def __enter__(self) -> StageOutput:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Any exception in the block drops the temporary folder; the old output stays. A
        full disk is said in so many words, with the folder that was being written."""
        if kind is None:
            return
        self.abort()
        full = disk_full(err)
        if full is not None:
            raise RuntimeError(
                f"disk full (ENOSPC) while stage {self.stage!r} wrote "
                f"{full.filename or self.tmp_dir}: free space on that filesystem and rerun; "
                f"the previous output in {self.out_dir} is kept and its temporary folder "
                "removed") from err

    def record(self, **facts: Any) -> None:
        """Facts for the manifest (counts, rejects, the model...), written at commit."""
        self.facts.update(facts)

    def path(self, name: str | StageFile) -> Path:
        """Where to write a file that is not a table (the FAISS index, say)."""
        return self.tmp_dir / file_name(name)

    def set_fingerprint(self, fingerprint: str) -> None:
        """The stage fingerprint, once the whole input has been seen."""
        if self.fingerprint not in (None, fingerprint):
            raise ValueError(f"stage {self.stage!r}: fingerprint {fingerprint} differs from "
                             f"{self.fingerprint}, stamped on files already written")
        self.fingerprint = fingerprint

    def stamp(self, schema: pa.Schema) -> pa.Schema:
        """The schema with this stage's stamp in its metadata."""
        if self.fingerprint is None:
            raise ValueError(f"stage {self.stage!r}: no fingerprint yet to stamp files with")
        meta = dict(schema.metadata or {})
        meta.pop(b"pandas", None)
        meta[STAMP_KEY] = self.fingerprint.encode()
        meta[STAGE_KEY] = self.stage.encode()
        return schema.with_metadata(meta)

    def write_table(self, name: str | StageFile, table: pa.Table,
                    row_group_size: int = 65_536) -> Path:
        """Write a stamped Parquet file (zstd) and return its temporary path."""
        path = self.path(name)
        table = table.replace_schema_metadata(self.stamp(table.schema).metadata)
        pq.write_table(table, path, compression="zstd", row_group_size=row_group_size)
        return path

    def open_table(self, name: str | StageFile, schema: pa.Schema | None = None
                   ) -> TableWriter:
        """A stamped Parquet file written batch by batch; closed by `commit` at the latest.

        `schema` defaults to the catalog entry's.
        """
        if schema is None:
            if not isinstance(name, StageFile):
                raise TypeError(f"{name}: a file name needs its schema")
            schema = name.schema()
        name = file_name(name)
        if name in self._writers:
            raise ValueError(f"{name}: already open in stage {self.stage!r} output")
        if self.fingerprint is None:
            path, schema = self.path(f".{name}.unstamped"), schema.remove_metadata()
        else:
            path, schema = self.path(name), self.stamp(schema)
        writer = TableWriter(path, schema, ROW_GROUP_ROWS, ROW_GROUP_BYTES)
        self._writers[name] = writer
        return writer

    def write_json(self, name: str | StageFile, obj: Any) -> Path:
        """Write a JSON file beside the tables."""
        path = self.path(name)
        path.write_text(json.dumps(obj, indent=2, sort_keys=True), encoding="utf-8")
        return path

    def _close_writers(self) -> None:
        for name, writer in self._writers.items():
            writer.close()
            if writer.path.name != name:  # opened before the fingerprint was known
                self._restamp(writer.path, self.path(name))
        self._writers = {}

    def _restamp(self, src: Path, dst: Path) -> None:
        with pq.ParquetFile(src) as pf, pq.ParquetWriter(
                dst, self.stamp(pf.schema_arrow), compression="zstd") as writer:
            for i in range(pf.num_row_groups):
                group = pf.read_row_group(i)
                writer.write_table(group, row_group_size=max(group.num_rows, 1))
        src.unlink()

    def commit(self, manifest: dict[str, Any]) -> Path:
        """Close open tables, write `_manifest.json` (with each file's sha256), swap it in."""
        if self.fingerprint is None:
            raise ValueError(f"stage {self.stage!r}: commit needs the fingerprint")
        self._close_writers()
        paths = [p for p in sorted(self.tmp_dir.iterdir()) if p.is_file()]
        full = {
            "stage": self.stage,
            "fingerprint": self.fingerprint,
            **manifest,
            "files": {p.name: sha256_file(p) for p in paths},
            "sizes": {p.name: p.stat().st_size for p in paths},
            "versions": library_versions(),
        }
        self.write_json(MANIFEST, full)
        old = self.out_dir.with_name(f".{self.out_dir.name}.old-{os.getpid()}")
        if self.out_dir.exists():
            os.replace(self.out_dir, old)
        os.replace(self.tmp_dir, self.out_dir)
        shutil.rmtree(old, ignore_errors=True)
        return self.out_dir

    def abort(self) -> None:
        """Drop the temporary folder (the previous output stays as it was)."""
        for writer in self._writers.values():
            writer.discard()
        self._writers = {}
        shutil.rmtree(self.tmp_dir, ignore_errors=True)


def raise_disk_full_at(err: OSError, path: Path) -> None:
    """Raise a full disk met while writing `path` as ENOSPC naming `path` (pyarrow's own
    error names no file); return for any other error, for the caller to re-raise."""
    if disk_full(err) is not None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from err


def disk_full(err: BaseException | None) -> OSError | None:
    """The 'no space left' error (ENOSPC, or EDQUOT: a quota) in `err` or its causes, or
    None. pyarrow raises it as a plain OSError whose errno is unset, its message kept."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and (err.errno in (errno.ENOSPC, errno.EDQUOT)
                                         or "No space left on device" in str(err)):
            return err
        err = err.__cause__ or err.__context__
    return None


def read_manifest(out_dir: Path, stage: str | None = None) -> dict[str, Any]:
    """Read a stage's manifest; refuse a missing one or one from another stage."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        hint = f" (run stage {stage!r} first)" if stage else ""
        raise ValueError(f"{path}: no stage manifest here{hint}")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if stage is not None and manifest.get("stage") != stage:
        raise ValueError(
            f"{path}: expected output of stage {stage!r}, found {manifest.get('stage')!r}"
        )
    return manifest


def check_file(path: Path, manifest: dict[str, Any]) -> None:
    """Refuse a stage file whose bytes are not those its manifest recorded (sha256): a
    flipped byte, a truncation or a file another run left."""
    want = manifest.get("files", {}).get(path.name)
    if want is None:
        raise ValueError(f"{path}: not listed in its stage's manifest; rerun stage "
                         f"{manifest.get('stage')!r}")
    if not path.is_file() or sha256_file(path) != want:
        what = "missing" if not path.is_file() else "does not match its manifest's sha256"
        raise ValueError(f"{path}: {what} (damaged or changed since stage "
                         f"{manifest.get('stage')!r} wrote it); rerun that stage, e.g. "
                         f"`embedpipe run --force` or `embedpipe stage {manifest.get('stage')}`")


def file_name(name: str | StageFile) -> str:
    """The file name of a catalog entry (or a plain name)."""
    return name.name if isinstance(name, StageFile) else name


def open_parquet(out_dir: Path, name: str | StageFile, manifest: dict[str, Any]
                 ) -> pq.ParquetFile:
    """One Parquet file of a stage output, refused if its stamp is not the manifest's."""
    path = Path(out_dir) / file_name(name)
    if not path.is_file():
        raise ValueError(f"{path}: missing from stage {manifest['stage']!r} output")
    pf = pq.ParquetFile(path)
    stamp = (pf.schema_arrow.metadata or {}).get(STAMP_KEY, b"").decode()
    if stamp != manifest["fingerprint"]:
        pf.close()
        raise ValueError(
            f"{path}: stamped {stamp or 'with no fingerprint'}, but its manifest says "
            f"{manifest['fingerprint']}; the folder mixes outputs of two runs"
        )
    return pf


def read_table(out_dir: Path, name: str | StageFile, manifest: dict[str, Any],
               columns: list[str] | None = None) -> pa.Table:
    """Read one Parquet file of a stage output (only `columns`, in that order, when given),
    refusing it if its stamp is not the manifest's."""
    with open_parquet(out_dir, name, manifest) as pf:
        return pf.read(columns=columns)


def read_with_vectors(out_dir: Path, name: str | StageFile, manifest: dict[str, Any],
                      vector_column: str, columns: list[str] | None = None
                      ) -> tuple[pa.Table, np.ndarray]:
    """(the file's other columns, or `columns`, its `fixed_size_list<float32>[d]` column as
    an (n, d) float32 matrix), stamp-checked. The vectors are decoded a row group at a time straight
    into the matrix: read whole (or through `iter_batches`, which holds its decoded column
    until the file is closed), a 59k x 384 column cost four times its size."""
    with open_parquet(out_dir, name, manifest) as pf:
        schema = pf.schema_arrow
        table = pf.read(columns=[c for c in schema.names if c != vector_column]
                        if columns is None else columns)
        x = np.empty((pf.metadata.num_rows, schema.field(vector_column).type.list_size),
                     dtype="float32")
        start = 0
        for g in range(pf.num_row_groups):
            column = pf.read_row_group(g, columns=[vector_column], use_threads=False).column(0)
            for chunk in column.chunks:
                stop = start + len(chunk)
                x[start:stop] = chunk.flatten().to_numpy(zero_copy_only=False).reshape(
                    len(chunk), -1)
                start = stop
    return table, x


def count_rows(out_dir: Path, name: str | StageFile, manifest: dict[str, Any]) -> int:
    """Rows in one (stamp-checked) Parquet file of a stage output, from its footer."""
    with open_parquet(out_dir, name, manifest) as pf:
        return pf.metadata.num_rows


def iter_batches(out_dir: Path, name: str | StageFile, manifest: dict[str, Any],
                 columns: list[str] | None = None, batch_rows: int | None = None
                 ) -> Iterator[pa.Table]:
    """A stage output file as tables of at most `batch_rows` rows (default `BATCH_ROWS`), in
    order, stamp-checked; only one batch (and its row group) is held at a time. A file of
    wide rows (megabyte documents) is read in fewer rows per batch, about `BATCH_BYTES`."""
    with open_parquet(out_dir, name, manifest) as pf:
        md = pf.metadata
        widest = max((md.row_group(i).total_byte_size / max(md.row_group(i).num_rows, 1)
                      for i in range(md.num_row_groups)), default=1.0)
        rows = max(1, min(batch_rows or BATCH_ROWS, int(BATCH_BYTES // max(widest, 1.0))))
        for batch in pf.iter_batches(batch_size=rows, columns=columns):
            yield pa.Table.from_batches([batch])


def check_lineage(manifests: dict[str, dict[str, Any]]) -> None:
    """Refuse inputs whose shared ancestors differ (e.g. vectors made from other chunks)."""
    seen: dict[str, tuple[str, str]] = {}
    for owner, manifest in manifests.items():
        for stage, fp in manifest.get("lineage", {}).items():
            if stage in seen and seen[stage][1] != fp:
                other, other_fp = seen[stage]
                raise ValueError(
                    f"inputs disagree on stage {stage!r}: {owner} was made from {fp[:12]}, "
                    f"{other} from {other_fp[:12]}; rerun the stale stages"
                )
            seen.setdefault(stage, (owner, fp))


def previous_keys(out_dir: Path, entry: StageFile, id_col: str, text_col: str
                  ) -> dict[str, str] | None:
    """id -> sha256 of `text_col` in the stage's previous output (None when there is none).

    Read batch by batch: the texts are hashed and dropped, only ids and hashes are kept.
    """
    try:
        manifest = read_manifest(out_dir, entry.stage)
        out: dict[str, str] = {}
        for batch in iter_batches(out_dir, entry, manifest, [id_col, text_col]):
            out.update((i, sha256_text(t or "")) for i, t in zip(
                batch.column(id_col).to_pylist(), batch.column(text_col).to_pylist(),
                strict=True))
    except (ValueError, OSError, pa.ArrowException, KeyError):
        return None
    return out


class ChangeCounter:
    """added / changed / deleted / unchanged rows of `entry` against the stage's previous
    output in `out_dir`, fed batch by batch. Ids are unique within an output, so only the
    previous ids are kept (and dropped as they are matched).
    """

    def __init__(self, out_dir: Path, entry: StageFile, id_col: str, text_col: str) -> None:
        self.id_col, self.text_col = id_col, text_col
        self.previous = previous_keys(out_dir, entry, id_col, text_col)
        self.added = self.changed = self.unchanged = 0

    def update(self, table: pa.Table) -> None:
        """Count one batch of the new output."""
        for i, t in zip(table.column(self.id_col).to_pylist(),
                        table.column(self.text_col).to_pylist(), strict=True):
            before = self.previous.pop(i, None) if self.previous is not None else None
            if before is None:
                self.added += 1
            elif before == sha256_text(t or ""):
                self.unchanged += 1
            else:
                self.changed += 1

    def counts(self) -> dict[str, int]:
        return {"added": self.added, "changed": self.changed,
                "deleted": len(self.previous or {}), "unchanged": self.unchanged}


class RowBatches:
    """Python rows gathered into batches of `BATCH_ROWS` rows or about `BATCH_BYTES` of text,
    whichever comes first, before they go to their table; `on_flush` sees each batch."""

    def __init__(self, writer: TableWriter,
                 on_flush: Callable[[pa.Table], None] | None = None) -> None:
        self.writer, self.on_flush = writer, on_flush
        self.rows: list[dict[str, Any]] = []
        self.count = self._chars = 0

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.count += 1
        self._chars += sum(len(v) for v in row.values() if isinstance(v, str))
        if len(self.rows) >= BATCH_ROWS or self._chars >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            table = pa.Table.from_pylist(self.rows, schema=self.writer.schema)
            self.writer.write(table)
            if self.on_flush is not None:
                self.on_flush(table)
        self.rows, self._chars = [], 0


def write_text_if_changed(path: Path, text: str) -> bool:
    """Write `text` to `path` in one rename, only when the file's content differs (its
    folder made where missing); whether it wrote."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return True


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON next to its final place, then rename it in."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
