"""Where documents come from: the selected files of a local folder or an S3 prefix.

Each file is a `SourceFile`: how to open it (or why it cannot be read), its size, its content
hash and, for S3 objects, their version facts.
"""

from __future__ import annotations

import fnmatch
import io
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError

from tasks.core.config import IngestConfig
from tasks.core.fingerprint import sha256_bytes, sha256_file
from tasks.documents.decoding import Opener
from tasks.storage import s3


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


class SourceFile(NamedTuple):
    """One selected file: how to read it (or why it cannot be read), its size and hash."""

    rel: str
    open: Opener | str
    size: int = 0
    sha256: str = ""
    facts: dict[str, Any] | None = None
    stat: tuple[int, ...] | None = None  # a local file's `stat_key`


def _rel_name(path: Path, folder: Path) -> str:
    """`path` relative to `folder`, POSIX, a name that is not UTF-8 kept visible as
    backslash escapes."""
    rel = path.relative_to(folder).as_posix()
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _entries(folder: Path, unlisted: dict[str, str] | None = None) -> dict[str, Path]:
    """Relative name -> path of every file and every symbolic link under `folder`; real
    folders are walked, linked ones never (so a link loop cannot trap the walk). A folder
    that cannot be listed (no permission) goes into `unlisted` with the reason, when given,
    so that its loss is a reject, not a silence."""

    def note(err: OSError) -> None:
        if unlisted is not None and err.filename is not None:
            rel = _rel_name(Path(err.filename), folder)
            unlisted[rel] = f"folder cannot be listed ({err.strerror}): its files are not read"

    out = {}
    top = len(os.path.join(folder, ""))  # names are cut from paths as strings: pathlib's
    for dirpath, dirnames, filenames in os.walk(folder, onerror=note, followlinks=False):
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in [*filenames, *links]:
            full = os.path.join(dirpath, name)  # relative_to was most of a walk's time
            rel = full[top:].replace(os.sep, "/")
            out[rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")] = (
                Path(full))
    return out


def unreadable_reason(path: Path, root: Path) -> str | None:
    """Why a file under the source folder `root` is not read, or None: a name that is not
    UTF-8, a link out of the folder, to a folder, broken or looping, or not a regular file.
    Nothing outside the folder is ever opened."""
    try:
        os.fsencode(path.name).decode("utf-8")
    except UnicodeDecodeError:
        return f"file name is not valid UTF-8 ({os.fsencode(path.name)!r})"
    if path.is_symlink():
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):
            return "symbolic link that is broken or loops"
        if not target.is_relative_to(root):
            return f"symbolic link to {target}, outside ingest.source (not read)"
        if target.is_dir():
            return "symbolic link to a folder (not followed: its files are read where they lie)"
    return None if path.is_file() else "not a regular file"


def unreadable_entries(folder: Path) -> list[Path]:
    """Every entry under `folder`, selected by the globs or not, that ingest does not read
    (`unreadable_reason`): what DVC must not hash either."""
    root = folder.resolve()
    return [p for p in _entries(folder).values() if unreadable_reason(p, root) is not None]


# (relative name, the file's stat) -> its sha256 when known from an earlier read, else None
KnownHash = Callable[[str, os.stat_result], str | None]


def stat_key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """What says a file is the one read before: size, mtime, and the inode, device and
    ctime, which no write, copy or `touch -d` leaves as they were."""
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, st.st_ctime_ns


def _local_files(folder: Path, cfg: IngestConfig, known: KnownHash | None = None
                 ) -> Iterator[SourceFile]:
    if not folder.is_dir():
        raise ValueError(f"ingest.source: {folder} is not a folder")
    unlisted: dict[str, str] = {}
    root, entries = folder.resolve(), _entries(folder, unlisted)
    for rel in sorted(r for r in unlisted if not _excluded(r, cfg)):
        yield SourceFile(rel, unlisted[rel])
    for rel in select_paths(list(entries), cfg):
        path = entries[rel]
        reason = unreadable_reason(path, root)
        if reason is not None:
            yield SourceFile(rel, reason)
            continue
        try:
            st = path.stat()
            digest = (known and known(rel, st)) or sha256_file(path)
        except OSError as err:  # no permission, an I/O error: a reject, not a dead run
            yield SourceFile(rel, f"file cannot be read ({err.strerror})")
            continue
        yield SourceFile(rel, lambda p=path: open(p, "rb"), st.st_size, digest,
                         stat=stat_key(st))


def _excluded(rel_folder: str, cfg: IngestConfig) -> bool:
    """Whether the exclude globs drop everything under a folder (e.g. `**/.*/**`)."""
    return any(_glob_match(f"{rel_folder}/x", g) or _glob_match(rel_folder, g)
               for g in cfg.exclude)


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


def source_files(cfg: IngestConfig, root: Path, known: KnownHash | None = None
                 ) -> list[SourceFile] | Iterator[SourceFile]:
    """The selected files of `cfg.source`: a local folder (relative to `root`), listed and
    hashed up front (a file whose hash `known` gives is not read), or an S3 prefix, whose
    objects are read (and hashed) one at a time."""
    if s3.is_s3(cfg.source):
        return _s3_objects(cfg.source, cfg)
    return list(_local_files((root / cfg.source).resolve(), cfg, known))


def _entry_row(rel: str, path: Path) -> dict[str, Any]:
    """What the listing says of one local entry, from `lstat` alone: nothing is opened and
    no link followed."""
    try:
        st = path.lstat()
    except OSError as err:
        return {"path": rel, "error": err.strerror}
    kind = ("link" if stat.S_ISLNK(st.st_mode) else "file" if stat.S_ISREG(st.st_mode)
            else "fifo" if stat.S_ISFIFO(st.st_mode) else "other")
    row: dict[str, Any] = {"path": rel, "kind": kind, "size": st.st_size,
                           "mtime_ns": st.st_mtime_ns}
    if kind == "link":
        row["target"] = os.fsdecode(os.readlink(path)).encode(
            "utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return row


def source_listing(cfg: IngestConfig, root: Path) -> list[dict[str, Any]]:
    """What DVC compares for `ingest.source` in place of hashing it: one row per entry
    of a local folder, selected or not (evaluate reads BEIR queries and qrels beside the
    documents), from ingest's own walker (path, kind, size, mtime; a link's target; a
    folder that cannot be listed), or one per object of an S3 prefix (key, size, ETag).

    DVC's own hashing stops a run on a symlink loop or a name that is not UTF-8, and would
    read what links point to outside the folder; this never opens a file.
    """
    if s3.is_s3(cfg.source):
        bucket, prefix = s3.parse_s3_url(cfg.source)
        client = s3.make_client(s3.S3Settings(cfg.s3_endpoint_url, cfg.s3_region,
                                              cfg.s3_max_attempts))
        return [{"path": o["key"], "size": o["size"], "etag": o["etag"]}
                for o in sorted(s3.list_objects(client, bucket, prefix), key=lambda o: o["key"])]
    folder = (root / cfg.source).resolve()
    if not folder.is_dir():
        raise ValueError(f"ingest.source: {folder} is not a folder")
    unlisted: dict[str, str] = {}
    rows = [_entry_row(rel, path) for rel, path in _entries(folder, unlisted).items()]
    rows += [{"path": rel, "error": why} for rel, why in unlisted.items()]
    return sorted(rows, key=lambda r: r["path"])
