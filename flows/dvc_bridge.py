"""DVC is the one judge of freshness: ask it which stages are stale, record what ran."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import chdir, contextmanager
from pathlib import Path
from typing import Any

import yaml

from tasks.core.io import pid_alive
from tasks.core.registry import STAGE_NAMES, dvc_plots, dvc_stages

RWLOCK_POLL_S = 0.5  # how often a run waiting for a `dvc repro` looks again


@contextmanager
def open_repo(root: Path | str, wait: bool = True) -> Iterator[Any]:
    """The DVC repo at `root` (imported lazily: dvc is slow to import); its lock, when taken,
    waits for other DVC commands (`wait`) or gives up after DVC's few retries."""
    from dvc.repo import Repo  # noqa: PLC0415

    logging.getLogger("dvc").setLevel(logging.WARNING)  # per-commit chatter, not news

    # DVC resolves some output paths against the working directory, not root_dir.
    with chdir(root):
        repo = Repo(str(root), _wait_for_lock=wait)
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


def describe_changes(changes: list[Any]) -> str:
    """DVC's status entries for one stage as one readable line."""
    parts = []
    for change in changes:
        if isinstance(change, str):
            parts.append(change)
            continue
        for kind, detail in change.items():
            if isinstance(detail, dict):
                items = []
                for path, what in detail.items():
                    if isinstance(what, dict):
                        items += [f"{k} {v}" for k, v in what.items()]
                    else:
                        items.append(f"{path} {what}")
                parts.append(f"{kind}: {', '.join(items)}")
            else:
                parts.append(f"{kind}: {detail}")
    return "; ".join(parts)


def stale_stages(repo: Any) -> dict[str, str]:
    """Stage name -> why DVC would rerun it now, for every stale stage (fresh ones absent).

    One `dvc status` for the whole pipeline: DVC parses dvc.yaml and dvc.lock once, where a
    call per stage parses them again for each.
    """
    return {name: describe_changes(changes) for name, changes in repo.status().items()
            if changes}


def stale_reason(repo: Any, stage: str) -> str | None:
    """Why DVC would rerun `stage` now, or None when it is fresh."""
    status = repo.status(targets=[stage])
    changes = status.get(stage)
    if not changes:
        return None
    return describe_changes(changes)


def record_stage(repo: Any, stage: str) -> None:
    """Write the stage's current deps, params and outs into dvc.lock (`dvc commit -f`)."""
    repo.commit(stage, force=True)


def pipeline_status(root: Path | str) -> dict[str, str | None]:
    """Stage name -> None when fresh, else the reason it is stale."""
    with open_repo(root) as repo:
        stale = stale_stages(repo)
    return {name: stale.get(name) for name in STAGE_NAMES}


def render_dvc_yaml(data_dir: str = "data") -> str:
    """dvc.yaml text generated from the stage registry."""
    header = ("# Generated from tasks/core/registry.py by `embedpipe dvc-yaml`; "
              "do not edit by hand.\n")
    body = yaml.safe_dump({"stages": dvc_stages(data_dir), "plots": dvc_plots(data_dir)},
                          sort_keys=False, width=100)
    return header + body
