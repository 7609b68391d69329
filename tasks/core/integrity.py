"""A folder checked against its `_manifest.json` before it is used: every listed file present,
of the recorded size (always: a truncation costs one `stat`) and of the recorded sha256.

Hashing a large index at every search start-up would cost seconds, so a file is hashed once
per change: after a file hashes right, its (size, mtime, inode, ctime) are kept in a record
under the user cache; while they stay the same the file is taken as verified. A rewrite,
truncation or copy changes them and the file is hashed again. Bit rot with every stat field
unchanged is caught only by the full check (`fast=False`: `embedpipe search --verify`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tasks.core.catalog import MANIFEST
from tasks.core.fingerprint import sha256_file, sha256_text


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def _record_path(records: Path, folder: Path) -> Path:
    return records / f"{sha256_text(str(folder.resolve()))[:32]}.json"


def _read_record(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _save_record(path: Path, record: dict[str, Any]) -> None:
    """Best effort: a record that cannot be written only means hashing again next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(record, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


def read_folder_manifest(folder: Path) -> dict[str, Any]:
    """The folder's manifest; ValueError when it is missing or not JSON."""
    path = folder / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: missing, so the folder cannot be checked") from None
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def file_problem(path: Path, size: int | None, sha256: str, verified: list[int] | None
                 ) -> str | None:
    """Why `path` is not the file its manifest lists (missing, another size, another sha256),
    or None; `verified`: the stat key under which it last hashed right (skips hashing)."""
    if not path.is_file():
        return "missing"
    actual = path.stat().st_size
    if size is not None and actual != size:
        return f"{actual} bytes, its manifest says {size} (truncated or rewritten)"
    if verified == _stat_key(path):
        return None
    if sha256_file(path) != sha256:
        return "its sha256 is not its manifest's (damaged or changed)"
    return None


def folder_problems(folder: Path, records: Path | None = None, fast: bool = True
                    ) -> list[tuple[str, str]]:
    """(file, why) for each file of `folder` that is not what its manifest lists. With
    `records` (a folder) and `fast`, files whose stat key matches the record of their last
    good hash are not hashed again; files that hash right are recorded."""
    folder = Path(folder)
    manifest = read_folder_manifest(folder)
    sizes = manifest.get("sizes", {})
    record_file = _record_path(records, folder) if records is not None else None
    record = _read_record(record_file) if record_file is not None and fast else {}
    problems, good = [], {}
    for name, sha in sorted(manifest.get("files", {}).items()):
        seen = record.get(name)
        verified = seen[0] if seen and seen[1] == sha else None
        problem = file_problem(folder / name, sizes.get(name), sha, verified)
        if problem:
            problems.append((name, problem))
        else:
            good[name] = [_stat_key(folder / name), sha]
    if record_file is not None and good != record:
        _save_record(record_file, good)
    return problems
