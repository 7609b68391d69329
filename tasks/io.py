"""Stage output folders: stamped Parquet files plus `_manifest.json`, swapped in atomically.

A stage output is complete or absent: files are written into a hidden sibling folder and
the folder replaces the old one in one rename. Readers check the stamps they rely on.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.fingerprint import sha256_file, sha256_text

MANIFEST = "_manifest.json"
STAMP_KEY = b"embedpipe.fingerprint"
STAGE_KEY = b"embedpipe.stage"
VECTOR_COLUMN = "vector"
_VERSIONED = (
    "embedpipe", "pyarrow", "numpy", "faiss-cpu", "torch", "sentence-transformers",
    "transformers", "scikit-learn", "spacy", "prefect", "dvc",
)


def vectors_to_arrow(x: np.ndarray) -> pa.FixedSizeListArray:
    """(n, d) float32 matrix -> `fixed_size_list<float32>[d]` without copying rows one by one."""
    x = np.ascontiguousarray(x, dtype="float32")
    if x.ndim != 2:
        raise ValueError(f"vectors must be a 2-D (n, d) array, got shape {x.shape}")
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])


def arrow_to_vectors(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """`fixed_size_list<float32>[d]` column -> contiguous (n, d) float32 matrix."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array(
            [], type=column.type
        )
    if not pa.types.is_fixed_size_list(column.type):
        raise TypeError(f"expected fixed_size_list<float32> vectors, got {column.type}")
    d = column.type.list_size
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(flat.reshape(len(column), d), dtype="float32")


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape outputs, for manifests."""
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_dead_leftovers(out_dir: Path) -> None:
    """Drop temporary folders left by killed runs (their pid no longer exists)."""
    for leftover in out_dir.parent.glob(f".{out_dir.name}.*-*"):
        pid = leftover.name.rsplit("-", 1)[-1]
        if pid.isdigit() and (int(pid) == os.getpid() or not _pid_alive(int(pid))):
            shutil.rmtree(leftover, ignore_errors=True)


class StageOutput:
    """Collects one stage's files in a temporary folder, then swaps it in whole.

    Args:
        out_dir: the stage's output folder (replaced on `commit`).
        stage: stage name, stamped on every file.
        fingerprint: the stage fingerprint, stamped on every file.
    """

    def __init__(self, out_dir: Path, stage: str, fingerprint: str) -> None:
        self.out_dir = Path(out_dir)
        self.stage = stage
        self.fingerprint = fingerprint
        self.tmp_dir = self.out_dir.with_name(f".{self.out_dir.name}.tmp-{os.getpid()}")
        _remove_dead_leftovers(self.out_dir)
        self.tmp_dir.mkdir(parents=True)

    def path(self, name: str) -> Path:
        """Where to write a file that is not a table (the FAISS index, say)."""
        return self.tmp_dir / name

    def stamp(self, schema: pa.Schema) -> pa.Schema:
        """The schema with this stage's stamp in its metadata."""
        meta = dict(schema.metadata or {})
        meta.pop(b"pandas", None)
        meta[STAMP_KEY] = self.fingerprint.encode()
        meta[STAGE_KEY] = self.stage.encode()
        return schema.with_metadata(meta)

    def write_table(self, name: str, table: pa.Table, row_group_size: int = 65_536) -> Path:
        """Write a stamped Parquet file (zstd) and return its temporary path."""
        path = self.path(name)
        table = table.replace_schema_metadata(self.stamp(table.schema).metadata)
        pq.write_table(table, path, compression="zstd", row_group_size=row_group_size)
        return path

    def open_writer(self, name: str, schema: pa.Schema) -> pq.ParquetWriter:
        """A streaming Parquet writer for tables written batch by batch."""
        return pq.ParquetWriter(self.path(name), self.stamp(schema), compression="zstd")

    def write_json(self, name: str, obj: Any) -> Path:
        """Write a JSON file beside the tables."""
        path = self.path(name)
        path.write_text(json.dumps(obj, indent=2, sort_keys=True), encoding="utf-8")
        return path

    def commit(self, manifest: dict[str, Any]) -> Path:
        """Write `_manifest.json` (with each file's sha256) and swap the folder in."""
        files = {
            p.name: sha256_file(p) for p in sorted(self.tmp_dir.iterdir()) if p.is_file()
        }
        full = {
            "stage": self.stage,
            "fingerprint": self.fingerprint,
            **manifest,
            "files": files,
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
        shutil.rmtree(self.tmp_dir, ignore_errors=True)


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


def read_table(out_dir: Path, name: str, manifest: dict[str, Any]) -> pa.Table:
    """Read one Parquet file of a stage output, refusing it if its stamp is not the manifest's."""
    path = Path(out_dir) / name
    if not path.is_file():
        raise ValueError(f"{path}: missing from stage {manifest['stage']!r} output")
    table = pq.read_table(path)
    stamp = (table.schema.metadata or {}).get(STAMP_KEY, b"").decode()
    if stamp != manifest["fingerprint"]:
        raise ValueError(
            f"{path}: stamped {stamp or 'with no fingerprint'}, but its manifest says "
            f"{manifest['fingerprint']}; the folder mixes outputs of two runs"
        )
    return table


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


def previous_keys(out_dir: Path, stage: str, name: str, id_col: str, text_col: str
                  ) -> dict[str, str] | None:
    """id -> sha256 of `text_col` in the stage's previous output (None when there is none)."""
    try:
        manifest = read_manifest(out_dir, stage)
        table = read_table(out_dir, name, manifest).select([id_col, text_col])
    except (ValueError, OSError, pa.ArrowException, KeyError):
        return None
    return {i: sha256_text(t or "") for i, t in zip(table.column(id_col).to_pylist(),
                                                    table.column(text_col).to_pylist(),
                                                    strict=True)}


def change_counts(previous: dict[str, str] | None, table: pa.Table, id_col: str,
                  text_col: str) -> dict[str, int]:
    """added / changed / deleted / unchanged rows against the previous output."""
    current = {i: sha256_text(t or "") for i, t in zip(table.column(id_col).to_pylist(),
                                                       table.column(text_col).to_pylist(),
                                                       strict=True)}
    if previous is None:
        return {"added": len(current), "changed": 0, "deleted": 0, "unchanged": 0}
    same = sum(previous.get(i) == k for i, k in current.items())
    added = sum(i not in previous for i in current)
    return {"added": added, "changed": len(current) - added - same,
            "deleted": sum(i not in current for i in previous), "unchanged": same}


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON next to its final place, then rename it in."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
