"""Published index versions: `<target>/<version>/` folders and the pointer readers follow.

In a folder, `CURRENT` (JSON) names the version; on S3, `<prefix>/LATEST`. Either pointer is
written last and atomically, so a reader sees the previous version or the new one, never a
half-copied folder. A version folder that exists but is not byte for byte what would be
published (its manifest and the sha256 of every file) is replaced whole, in one step.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.core.catalog import MANIFEST
from tasks.core.integrity import folder_problems
from tasks.core.io import read_manifest, write_json_atomic
from tasks.core.registry import get_stage
from tasks.storage import s3

POINTER = "CURRENT"
LATEST = "LATEST"
_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100
log = logging.getLogger(__name__)


def version_name(index_manifest: dict[str, Any]) -> str:
    """Published folder name: the index fingerprint (same index, same name)."""
    return f"index-{index_manifest['fingerprint'][:16]}"


def read_pointer(target: Path) -> dict[str, Any] | None:
    """The CURRENT pointer of a publish target, or None when nothing is published."""
    path = target / POINTER
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def current_index(target: Path) -> Path | None:
    """The folder CURRENT points at."""
    pointer = read_pointer(target)
    return None if pointer is None else target / pointer["version"]


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux `renameat2(RENAME_EXCHANGE)`): a reader of
    `b` sees the old folder or the new one, never none. False where it is not supported."""
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is None:
        return False
    return fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


def differs(final: Path, index_dir: Path) -> str | None:
    """Why the published `final` is not byte for byte `index_dir` (whose files were checked
    against its manifest): another manifest, or a file that is not the manifest's; None."""
    mine, theirs = final / MANIFEST, index_dir / MANIFEST
    if not mine.is_file() or mine.read_bytes() != theirs.read_bytes():
        return "another build's manifest"
    problems = folder_problems(final, fast=False)
    return "; ".join(f"{name}: {why}" for name, why in problems) or None


def install_version(index_dir: Path, final: Path) -> None:
    """Copy `index_dir` to `final` under a temporary name, then swap it in (an existing
    `final` is exchanged in one step where the OS can, else renamed aside first)."""
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(index_dir, tmp)
    if not final.is_dir():
        os.replace(tmp, final)
        return
    if not exchange(tmp, final):
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        tmp = old
    shutil.rmtree(tmp, ignore_errors=True)  # the replaced folder


def publish_folder(index_dir: Path, target: Path, version: str, pointer: dict[str, Any],
                   keep: int) -> Path:
    """Copy `index_dir` (refused unless its files match its manifest) to `target/version`,
    replacing a folder of that name that differs, then move CURRENT."""
    problems = folder_problems(index_dir, fast=False)
    if problems:
        raise ValueError("publish: " + "; ".join(f"{index_dir / n}: {why}" for n, why in
                                                 problems) + "; rerun `embedpipe stage index`")
    target.mkdir(parents=True, exist_ok=True)
    final = target / version
    why = differs(final, index_dir) if final.is_dir() else "new"
    if why is not None:
        if why != "new":
            log.warning("publish: %s is not what would be published (%s); replaced", final,
                        why)
        install_version(index_dir, final)
    write_json_atomic(target / POINTER, {"version": version, **pointer})
    versions = sorted((p for p in target.iterdir() if p.is_dir() and p.name.startswith("index-")
                       and p.name != version), key=lambda p: p.stat().st_mtime)
    for old in versions[:max(0, len(versions) - (keep - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def damaged_version(target: Path, version: str) -> str | None:
    """Why the published `target/version` that CURRENT points at is not what its manifest
    lists (sizes, then hashes once per change), or None (fine, absent or not current)."""
    if (read_pointer(target) or {}).get("version") != version:
        return None
    try:
        problems = folder_problems(target / version)
    except ValueError as err:
        return str(err)
    return "; ".join(f"{target / version / n}: {why}" for n, why in problems) or None


def workspace_damage(root: Path, params: Any) -> str | None:
    """Why the workspace's publish must run though DVC finds it fresh: the published folder
    of its current index (CURRENT, in a local target) is damaged; None otherwise."""
    if s3.is_s3(params.publish.target):
        return None
    try:
        index = read_manifest(get_stage("index").out_dir(params, root), "index")
    except ValueError:
        return None
    why = damaged_version(root / params.publish.target, version_name(index))
    return None if why is None else f"published folder damaged ({why})"


def publish_to_s3(index_dir: Path, url: str, version: str, pointer: dict[str, Any],
                  client: Any, before_pointer: Callable[[], None] | None = None) -> str:
    """Upload every file to `<prefix>/<version>/`, then write `<prefix>/LATEST` last.

    A reader that follows LATEST sees the previous version until the pointer is written.
    `before_pointer` runs between the two (tests use it to stop a publish there).
    """
    bucket, prefix = s3.parse_s3_url(url)
    base = f"{prefix}/{version}" if prefix else version
    for path in sorted(index_dir.rglob("*")):  # a tuned model's folder too
        if path.is_file():
            client.upload_file(str(path), bucket,
                               f"{base}/{path.relative_to(index_dir).as_posix()}")
    if before_pointer is not None:
        before_pointer()
    body = json.dumps({"version": version, **pointer}, sort_keys=True).encode()
    client.put_object(Bucket=bucket, Key=f"{prefix}/{LATEST}" if prefix else LATEST, Body=body)
    return f"s3://{bucket}/{base}"


def fetch_published(url: str, client: Any, cache_dir: Path) -> Path:
    """Download the version LATEST points at (once) and return its local folder."""
    bucket, prefix = s3.parse_s3_url(url)
    key = f"{prefix}/{LATEST}" if prefix else LATEST
    try:
        pointer = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    except Exception as err:  # botocore raises per-code classes
        raise ValueError(f"{url}: no published index ({s3.client_error_reason(err)} "
                         f"reading {key})") from None
    version = pointer["version"]
    local = cache_dir / bucket / (prefix or "_") / version
    if local.is_dir():
        return local
    tmp = local.with_name(f".{version}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    base = f"{prefix}/{version}" if prefix else version
    for obj in s3.list_objects(client, bucket, base):
        rel = obj["key"][len(base) + 1:]
        if (why := s3.unsafe_key_reason(rel)) is not None:
            raise ValueError(f"{url}: object {obj['key']!r}: {why}")
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, obj["key"], str(tmp / rel))
    os.replace(tmp, local)
    return local
