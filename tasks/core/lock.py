"""One run per workspace: an advisory file lock shared by the flow, the CLI and `dvc repro`.

The lock is an flock on `.embedpipe.lock`: the kernel drops it when its holder dies, so a
lock left by a killed process is reclaimed by the next run. Who holds it is written beside.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from tasks.core.io import pid_alive

LOCK_FILE = ".embedpipe.lock"
HOLDER_FILE = ".embedpipe.lock.holder"


def _read_holder(root: Path) -> dict[str, Any] | None:
    try:
        return json.loads((root / HOLDER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def holder(root: Path) -> str:
    """Who holds the workspace lock, in words (from the record it wrote beside)."""
    info = _read_holder(root)
    if info is None:
        return "another process"
    return f"pid {info.get('pid')} ({info.get('what')}) since {info.get('since')}"


def _unmarked_runs(root: Path) -> list[str]:
    """Prefect flow runs whose process died holding the workspace (killed, out of memory)
    and that no later flow run has marked yet: the last holder's, when it never released the
    lock, plus those it inherited (a `dvc repro` stage between two flow runs passes them on).
    """
    info = _read_holder(root) or {}
    runs = [str(r) for r in info.get("unmarked_runs", [])]
    pid = info.get("pid")
    died = (isinstance(pid, int) and pid != os.getpid() and not info.get("released")
            and not pid_alive(pid))
    if died and info.get("flow_run_id"):
        runs.append(str(info["flow_run_id"]))
    return runs


def _write_holder(root: Path, record: dict[str, Any]) -> None:
    (root / HOLDER_FILE).write_text(json.dumps(record), encoding="utf-8")


@contextmanager
def workspace_lock(root: Path | str, what: str, on_busy: str = "wait",
                   wait_s: float = 3600, run_id: str | None = None
                   ) -> Iterator[list[str]]:
    """Hold the workspace lock for the block; yields the ids of flow runs that died holding
    it, for a flow run (`run_id` given) to mark; a holder without a `run_id` passes them on.

    Args:
        root: the workspace.
        what: who is running, for the message another run sees.
        on_busy: 'wait' (up to `wait_s` seconds) or 'fail' at once.
        wait_s: how long 'wait' waits.
        run_id: this holder's Prefect flow run id, recorded for the next holder; a holder
            with one takes over marking the runs it is given.

    Raises:
        RuntimeError: the workspace stayed busy, naming the holder.
    """
    root = Path(root).resolve()
    lock = FileLock(str(root / LOCK_FILE))
    try:
        lock.acquire(timeout=0 if on_busy == "fail" else wait_s)
    except Timeout:
        raise RuntimeError(
            f"workspace {root} is busy: held by {holder(root)}; "
            + ("run.on_busy is 'fail'" if on_busy == "fail" else f"waited {wait_s:.0f}s")
        ) from None
    try:
        unmarked = _unmarked_runs(root)
        record = {"pid": os.getpid(), "what": what, "flow_run_id": run_id,
                  "unmarked_runs": [] if run_id else unmarked,
                  "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        _write_holder(root, record)
        yield unmarked
        _write_holder(root, {**record, "released": True})
    finally:
        lock.release()
