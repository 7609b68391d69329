"""Published index versions: `<target>/<version>/` folders and the pointer readers follow.

In a folder, `CURRENT` (JSON) names the version; on S3, `<prefix>/LATEST`. Either pointer is
written last and atomically, so a reader sees the previous version or the new one, never a
half-copied folder.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.core.io import write_json_atomic
from tasks.storage import s3

POINTER = "CURRENT"
LATEST = "LATEST"


def read_pointer(target: Path) -> dict[str, Any] | None:
    """The CURRENT pointer of a publish target, or None when nothing is published."""
    path = target / POINTER
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def current_index(target: Path) -> Path | None:
    """The folder CURRENT points at."""
    pointer = read_pointer(target)
    return None if pointer is None else target / pointer["version"]


def publish_folder(index_dir: Path, target: Path, version: str, pointer: dict[str, Any],
                   keep: int) -> Path:
    """Copy `index_dir` to `target/version` (temp name, then rename), then move CURRENT."""
    target.mkdir(parents=True, exist_ok=True)
    final = target / version
    if not final.is_dir():
        tmp = target / f".{version}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(index_dir, tmp)
        os.replace(tmp, final)
    write_json_atomic(target / POINTER, {"version": version, **pointer})
    versions = sorted((p for p in target.iterdir() if p.is_dir() and p.name.startswith("index-")
                       and p.name != version), key=lambda p: p.stat().st_mtime)
    for old in versions[:max(0, len(versions) - (keep - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    return final


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
