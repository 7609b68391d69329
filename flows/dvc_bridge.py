"""DVC is the one judge of freshness: ask it which stages are stale, record what ran."""

from __future__ import annotations

import configparser
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import chdir, contextmanager
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML

from tasks.core.code_digest import changed_modules, write_code_digests
from tasks.core.config import Params
from tasks.core.io import pid_alive
from tasks.core.registry import (
    CODE_DIR,
    CODE_STAGE,
    SOURCE_STAGE,
    STAGE_NAMES,
    dvc_plots,
    dvc_stages,
    get_stage,
)
from tasks.documents.listing import write_source_listing
from tasks.documents.sources import unreadable_entries
from tasks.storage.s3 import is_s3

RWLOCK_POLL_S = 0.5  # how often a run waiting for a `dvc repro` looks again
IGNORE_BLOCK = ("# >>> embedpipe: entries of ingest.source that ingest rejects unread and DVC "
                "cannot hash\n", "# <<< embedpipe\n")


@contextmanager
def open_repo(root: Path | str, wait: bool = True) -> Iterator[Any]:
    """The DVC repo at `root` (imported lazily: dvc is slow to import); its lock, when taken,
    waits for other DVC commands (`wait`) or gives up after DVC's few retries."""
    from dvc.repo import Repo  # noqa: PLC0415

    logging.getLogger("dvc").setLevel(logging.WARNING)  # per-commit chatter, not news

    # DVC resolves some output paths against the working directory, not root_dir.
    with chdir(root):
        repo = Repo(str(root), _wait_for_lock=wait)
        repair_rwlock(Path(repo.tmp_dir), repo.config["core"].get("hardlink_lock", False))
        try:
            yield repo
        finally:
            repo.close()


@contextmanager
def hold_repo(root: Path | str, wait: bool = True) -> Iterator[Any]:
    """The DVC repo with its repository lock held for the whole block, as `dvc repro` holds
    it for its whole run: a run and a `dvc repro` then take turns instead of one failing on
    DVC's lock between stages. Taken before the workspace lock, in the order `dvc repro` and
    its stage processes take them, so the two never wait on each other.

    Raises:
        RuntimeError: `wait` is False and another DVC command holds the lock.
    """
    from dvc.lock import LockError  # noqa: PLC0415
    from dvc.repo import lock_repo  # noqa: PLC0415

    with open_repo(root, wait) as repo:
        while True:
            held = lock_repo(repo)
            try:
                held.__enter__()
            except LockError:
                raise RuntimeError(f"workspace {root} is busy: another DVC command holds its "
                                   "repository lock; run.on_busy is 'fail'") from None
            busy = stage_locks_held(Path(repo.tmp_dir))
            if not busy:
                break
            held.__exit__(None, None, None)  # a `dvc repro` is inside a stage: let it finish
            if not wait:
                raise RuntimeError(f"workspace {root} is busy: {busy}; run.on_busy is 'fail'")
            time.sleep(RWLOCK_POLL_S)
        try:
            yield repo
        finally:
            held.__exit__(None, None, None)


def repair_rwlock(tmp_dir: Path, hardlink: bool = False) -> None:
    """Remove DVC's per-path lock file (`.dvc/tmp/rwlock`) when it is provably stale.

    DVC rewrites it in place; a write that meets a full disk leaves it empty or cut short,
    and every DVC command after fails on it ("JSON structure is corrupted"). Under DVC's own
    guard of that file, one that does not parse and names no live process holds nothing:
    it is deleted (DVC reads a missing one as no locks held).

    Raises:
        RuntimeError: it does not parse and names a live process, which may still hold a
            lock: the message says what to delete once that process has ended.
    """
    from dvc.lock import make_lock  # noqa: PLC0415

    path = tmp_dir / "rwlock"
    if not path.is_file():
        return
    with make_lock(str(tmp_dir / "rwlock.lock"), tmp_dir=str(tmp_dir), hardlink_lock=hardlink,
                   wait=True):
        text = path.read_text(encoding="utf-8", errors="replace")
        try:
            json.loads(text)
            return
        except ValueError:
            pass
        live = sorted({int(p) for p in re.findall(r'"pid":\s*(\d+)', text)
                       if int(p) != os.getpid() and pid_alive(int(p))})
        if live:
            raise RuntimeError(f"{path} is corrupted (cut short, e.g. by a full disk) and names "
                               f"live processes {live}: once they have ended, delete {path}")
        path.unlink()
    logging.getLogger(__name__).warning(
        "%s was corrupted (cut short, e.g. by a full disk) and named no live process: "
        "removed; DVC starts it afresh", path)


def stage_locks_held(tmp_dir: Path) -> str | None:
    """Who holds DVC's per-path stage locks (`.dvc/tmp/rwlock`), among live processes: a
    `dvc repro` running a stage's command holds them with the repository lock released."""
    try:
        info = json.loads((tmp_dir / "rwlock").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    holders = [*info.get("write", {}).values(),
               *(h for hs in info.get("read", {}).values() for h in hs)]
    live = {f"pid {h['pid']} ({h['cmd']})" for h in holders if pid_alive(int(h["pid"]))}
    return ", ".join(sorted(live)) or None


def _status_line(changes: list[Any], render: Callable[[str, Any], str]) -> str:
    """DVC's status entries for one stage (strings, or {kind: detail}) as one line; params
    entries are left out (`explain_stale` names the keys that changed instead)."""
    parts = []
    for change in changes:
        if isinstance(change, str):
            parts.append(change)
            continue
        for kind, detail in change.items():
            paths = ({k: v for k, v in detail.items() if not isinstance(v, dict)}
                     if isinstance(detail, dict) else detail)
            if paths:
                parts.append(render(kind, paths))
    return "; ".join(parts)


def _every_path(kind: str, detail: Any) -> str:
    if not isinstance(detail, dict):
        return f"{kind}: {detail}"
    return f"{kind}: {', '.join(f'{path} {what}' for path, what in detail.items())}"


def _few(names: list[str], shown: int = 2) -> str:
    more = f" +{len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _counted(kind: str, detail: Any) -> str:
    """`deps: 2 modified (a.py, b.py)`: paths counted per status, named when three or fewer."""
    what = kind.removeprefix("changed ")
    if not isinstance(detail, dict):
        return f"{what}: {detail}"
    by_status: dict[str, list[str]] = {}
    for path, status in detail.items():
        by_status.setdefault(str(status), []).append(path)
    return f"{what}: " + ", ".join(
        f"{len(paths)} {status}" + (f" ({_few(paths)})" if len(paths) <= 3 else "")
        for status, paths in by_status.items())


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, sub in value.items():
        out |= _flat(sub, f"{prefix}.{key}" if prefix else str(key))
    return out


def _shown(value: Any) -> str:
    return "(absent)" if value is _ABSENT else json.dumps(value, ensure_ascii=False,
                                                          default=str)  # a date


_ABSENT = object()


def _yaml12(path: Path) -> Any:
    """A YAML file read as DVC reads it (YAML 1.2, ruamel's C parser): `2e-05` is a number,
    where PyYAML's YAML 1.1 reads a string, and `2.0e-05` a number."""
    return YAML(typ="safe").load(path.read_text(encoding="utf-8"))


def _lock_entry(root: Path, stage: str) -> dict[str, Any] | None:
    """What dvc.lock recorded for `stage`; None when it has no entry (it never ran here)."""
    lock_path = root / "dvc.lock"
    lock = _yaml12(lock_path) if lock_path.is_file() else None
    return ((lock or {}).get("stages") or {}).get(stage)


def named_modules(root: Path, stage: str, changes: list[Any],
                  entry: dict[str, Any] | None = None) -> list[Any]:
    """DVC's status entries for `stage` with its code digest's change (`code/<stage>.json
    modified`) told as the modules that changed (modified, new or deleted): the digest
    dvc.lock recorded is read back from DVC's cache and compared with the current one (left
    as it is where the cache lacks it). `entry`: what dvc.lock recorded for `stage`, where
    the caller has read it."""
    digest = f"{CODE_DIR}/{stage}.json"
    out = []
    for change in changes:
        deps = change.get("changed deps") if isinstance(change, dict) else None
        path = next((p for p in deps or {} if p == digest or p.endswith(f"/{digest}")), None)
        if path and entry is None:
            entry = _lock_entry(root, stage)
        old = _cached_text(root, entry, path) if path else None
        if old is None or deps[path] != "modified":
            out.append(change)
            continue
        modules = changed_modules(old, (root / path).read_text(encoding="utf-8"))
        named = {p: v for p, v in deps.items() if p != path} | modules
        out.append(change | {"changed deps": named})
    return out


def _cached_text(root: Path, entry: dict[str, Any] | None, path: str) -> str | None:
    """The text dvc.lock's `entry` recorded for its dep `path`, from DVC's local cache (None
    where it is not there: `dvc gc`, a cache elsewhere than `.dvc/config` says)."""
    md5 = next((d.get("md5") for d in (entry or {}).get("deps", []) if d.get("path") == path),
               None)
    cached = _cache_dir(root) / "files/md5" / md5[:2] / md5[2:] if md5 else None
    return cached.read_text(encoding="utf-8") if cached is not None and cached.is_file() else None


def _cache_dir(root: Path) -> Path:
    """DVC's local cache folder: `cache.dir` of .dvc/config.local or .dvc/config (relative
    to .dvc/), else .dvc/cache."""
    found = None
    for name in ("config", "config.local"):  # the local file wins
        config = configparser.ConfigParser(interpolation=None)
        config.read(root / ".dvc" / name, encoding="utf-8")
        found = config.get("cache", "dir", fallback=found)
    return root / ".dvc" / (found or "cache")


def param_key_changes(root: Path, stage: str, entry: dict[str, Any] | None = None
                      ) -> list[str] | None:
    """`dedup.threshold 0.95 → 0.9` for every params.yaml key of `stage` whose value differs
    from the one dvc.lock recorded (a `--set`, a form field or a hand edit alike); None when
    dvc.lock has no entry for the stage (it never ran here). `entry`: that entry, where the
    caller has read it."""
    entry = entry if entry is not None else _lock_entry(root, stage)
    if entry is None:
        return None
    old = _flat(entry.get("params", {}).get("params.yaml", {}), "")
    current = _yaml12(root / "params.yaml") or {}
    declared = get_stage(stage).params if stage in STAGE_NAMES else ()
    new: dict[str, Any] = {}
    for name in declared:
        value: Any = current
        for part in name.split("."):
            value = value.get(part, _ABSENT) if isinstance(value, dict) else _ABSENT
        new |= _flat(value, name) if value is not _ABSENT else {name: _ABSENT}
    return [f"{k} {_shown(old.get(k, _ABSENT))} → {_shown(new.get(k, _ABSENT))}"
            for k in sorted(old.keys() | new.keys())
            if old.get(k, _ABSENT) != new.get(k, _ABSENT)]


def explain_stale(root: Path, stage: str, changes: list[Any]) -> tuple[str, str]:
    """Why `stage` runs, (in short, in full): `never run` when dvc.lock has no entry for it;
    otherwise the changed paths (counted in short, every one in full) and each params key
    that changed with its old and new value."""
    entry = _lock_entry(Path(root), stage)
    keys = param_key_changes(Path(root), stage, entry)
    if keys is None:
        return "never run", "never run (no entry in dvc.lock)"
    changes = named_modules(Path(root), stage, changes, entry)
    params = [f"params: {', '.join(keys)}"] if keys else []
    short = "; ".join([p for p in [_status_line(changes, _counted)] if p] + params)
    full = "; ".join([p for p in [_status_line(changes, _every_path)] if p] + params)
    return short or "changed", full or "changed"




def stale_stages(repo: Any) -> dict[str, list[Any]]:
    """Stage name -> DVC's status entries (why it would rerun it now), for every stale stage
    (fresh ones absent). One `dvc status` for the whole pipeline: DVC parses dvc.yaml and
    dvc.lock once, where a call per stage parses them again for each."""
    status = repo.status()
    return {name: changes for name, changes in status.items() if changes}


def stale_reason(repo: Any, stage: str) -> list[Any] | None:
    """DVC's status entries for `stage` now, or None when it is fresh."""
    status = repo.status(targets=[stage])
    return status.get(stage) or None


def record_stage(repo: Any, stage: str) -> None:
    """Write the stage's current deps, params and outs into dvc.lock (`dvc commit -f`)."""
    repo.commit(stage, force=True)


def pipeline_status(root: Path | str) -> dict[str, str | None]:
    """Stage name -> None when fresh, else the reason it is stale (every path and key)."""
    with open_repo(root) as repo:
        stale = stale_stages(repo)
    return {name: explain_stale(Path(root), name, stale[name])[1] if name in stale else None
            for name in STAGE_NAMES}


def render_dvc_yaml(data_dir: str = "data") -> str:
    """dvc.yaml text generated from the stage registry."""
    header = ("# Generated from tasks/core/registry.py by `embedpipe dvc-yaml`; "
              "do not edit by hand.\n")
    body = yaml.safe_dump({"stages": dvc_stages(data_dir), "plots": dvc_plots(data_dir)},
                          sort_keys=False, width=100)
    return header + body


def ignore_pattern(rel: str) -> str:
    """A `.dvcignore` line matching just the path `rel` (relative to the repository root, its
    undecodable bytes as surrogate escapes): glob characters escaped, and `?` for what a line
    cannot hold (undecodable bytes, newlines, other control characters)."""
    out = []
    for ch in rel:
        if ch in "*?[\\":
            out.append("\\" + ch)
        elif not ch.isprintable() or "\udc80" <= ch <= "\udcff":
            out.append("?")
        else:
            out.append(ch)
    line = "/" + "".join(out)
    return line[:-1] + "\\ " if line.endswith(" ") else line


def exclude_unhashable(root: Path, source: str) -> None:
    """Keep DVC's hashing of a local `ingest.source` off what ingest rejects unread: links
    that loop, break or leave the folder, names that are not UTF-8, pipes and sockets. DVC
    stops at the first of them (`Too many levels of symbolic links`, `surrogates not
    allowed`) before any stage runs, and would read the files a link points to outside the
    folder. They are listed in one marked block of `.dvcignore`, rewritten when it changes;
    ingest still lists each in its rejects with the reason."""
    folder = (root / source).resolve()
    if is_s3(source) or not folder.is_dir() or not folder.is_relative_to(root):
        return
    lines = sorted(ignore_pattern(os.fsdecode(p.relative_to(root)))
                   for p in unreadable_entries(folder))
    path = root / ".dvcignore"
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    begin, end = IGNORE_BLOCK
    kept = re.sub(f"{re.escape(begin)}.*?{re.escape(end)}", "", text, flags=re.S)
    block = begin + "".join(f"{line}\n" for line in lines) + end if lines else ""
    new = kept + ("\n" if kept and not kept.endswith("\n") and block else "") + block
    if new != text:
        path.write_text(new, encoding="utf-8")



def refresh_inputs(repo: Any, params: Params) -> None:
    """Write and record what DVC hashes in place of the code and of `ingest.source`: the
    code digests first (the DVC stage `source` depends on its own)."""
    refresh_code_digests(repo, params)
    refresh_source_listing(repo, params)


def refresh_code_digests(repo: Any, params: Params) -> None:
    """Write each stage's code digest (`tasks.core.code_digest`: what DVC hashes for a
    stage's code) before DVC is asked what is stale, and record the DVC stage `code` that
    owns them, so that `dvc status` and `dvc repro` agree afterwards."""
    _record_if_stale(repo, CODE_STAGE, write_code_digests(Path(repo.root_dir),
                                                           params.paths.data))


def refresh_source_listing(repo: Any, params: Params) -> None:
    """Write ingest's listing of `ingest.source` (what DVC hashes for ingest and evaluate in
    place of the folder) before DVC is asked what is stale, and record the DVC stage
    `source` that owns it, so that `dvc status` and `dvc repro` agree afterwards."""
    _record_if_stale(repo, SOURCE_STAGE, write_source_listing(Path(repo.root_dir), params))


def _record_if_stale(repo: Any, stage: str, written: bool) -> None:
    """Record `stage` when its out was just rewritten or DVC calls it stale."""
    if written or stale_reason(repo, stage) is not None:
        record_stage(repo, stage)
