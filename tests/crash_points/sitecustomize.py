"""Crash points for `tests/test_crash.py`, loaded by every Python process of a run (the
flow, each `dvc repro` stage command) when this folder is on PYTHONPATH.

- `EMBEDPIPE_CRASH_LOG`: a file each point reached is appended to, one `<stage> <point>` line.
- `EMBEDPIPE_CRASH_AT`: `<stage> <point>`: SIGKILL this process's whole group on reaching it.
- `EMBEDPIPE_CRASH_SIGNAL`: another signal to send instead (`SIGTERM`, `SIGINT`); the time it
  is sent (`time.time()`) is appended to the log as `<stage> <point> sent <time>`; the
  process then waits (up to 10 s) for its handler to run at that point.

Points, counted per stage within one process:
- `write N`: the Nth table batch or file a stage writes into its temporary output folder;
- `cache N`: the Nth cache shard the stage wrote (encode: vector cache; ingest, clean,
  chunk: result cache), written but not yet renamed into place;
- `renamed`: the new output folder renamed into place, before DVC records it (the flow's
  `dvc commit`, or `dvc repro` writing dvc.lock after the stage's command exits).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import re
import signal
import sys
import time
from pathlib import Path

_LOG = os.environ.get("EMBEDPIPE_CRASH_LOG")
_AT = os.environ.get("EMBEDPIPE_CRASH_AT")
_TMP_OUT = re.compile(r"^\.\d+_(\w+)\.tmp-\d+$")
_counts: dict[tuple[str, str], int] = {}


def reached(stage: str, kind: str, counted: bool = True) -> None:
    if counted:
        _counts[stage, kind] = _counts.get((stage, kind), 0) + 1
        point = f"{stage} {kind} {_counts[stage, kind]}"
    else:
        point = f"{stage} {kind}"
    if _LOG:
        with open(_LOG, "a", encoding="utf-8") as f:
            f.write(point + "\n")
    if point == _AT:
        signum = getattr(signal, os.environ.get("EMBEDPIPE_CRASH_SIGNAL", "SIGKILL"))
        if _LOG:
            with open(_LOG, "a", encoding="utf-8") as f:
                f.write(f"{point} sent {time.time()}\n")
                if signum != signal.SIGKILL:  # one a handler takes: say who would
                    f.write(_signal_state())
        os.killpg(os.getpgid(0), signum)
        # Python runs the handler in the main thread at its next check, and on a loaded
        # machine a signal taken by another thread can land later than this point (the
        # slow lane saw a SIGINT land where it was lost): wait here, so that it lands in
        # the write this point names.
        for _ in range(200):
            time.sleep(0.05)


def _signal_state() -> str:
    """Who would take the signal, for a run that did not stop on it (the slow lane saw a
    SIGINT lost twice): this thread, Python's handler, the kernel's masks."""
    import threading  # noqa: PLC0415

    status = Path("/proc/self/status")
    masks = [line.strip() for line in (status.read_text().splitlines() if status.exists()
                                       else []) if line.startswith(("SigBlk", "SigIgn",
                                                                    "SigCgt"))]
    return (f"# signal state: pid {os.getpid()}, thread {threading.current_thread().name}, "
            f"Python's SIGINT handler {signal.getsignal(signal.SIGINT)!r}, "
            f"{', '.join(masks)}\n")


_real_replace = os.replace


def _cache_owner(dst) -> str:
    """The stage a cache shard belongs to: a result-cache shard (`<result_cache>/<stage>/...`,
    tasks/core/result_cache.py) its stage's, any other (the vector cache) encode's."""
    parts = Path(os.fsdecode(dst)).parts
    if "results" in parts[:-1]:
        return parts[parts.index("results") + 1]
    return "encode"


def _replace(src, dst, *args, **kwargs):
    name = Path(os.fsdecode(src)).name
    if name.startswith(".part-") and ".tmp-" in name:
        reached(_cache_owner(dst), "cache")
    _real_replace(src, dst, *args, **kwargs)
    match = _TMP_OUT.match(name)
    if match:
        reached(match.group(1), "renamed", counted=False)


def _patch_io(io) -> None:
    write, write_table, write_json = (io.TableWriter.write, io.StageOutput.write_table,
                                      io.StageOutput.write_json)

    def table_writer_write(self, data):
        match = _TMP_OUT.match(self.path.parent.name)
        write(self, data)
        if match:
            reached(match.group(1), "write")

    def output_write_table(self, name, table, *args, **kwargs):
        out = write_table(self, name, table, *args, **kwargs)
        reached(self.stage, "write")
        return out

    def output_write_json(self, name, obj):
        out = write_json(self, name, obj)
        reached(self.stage, "write")
        return out

    io.TableWriter.write = table_writer_write
    io.StageOutput.write_table = output_write_table
    io.StageOutput.write_json = output_write_json


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Patches `tasks.core.io` right after it is first executed."""

    def find_spec(self, name, path, target=None):
        if name != "tasks.core.io":
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _patch_io(module)

        spec.loader.exec_module = exec_and_patch
        return spec


if _LOG or _AT:
    os.replace = _replace
    sys.meta_path.insert(0, _PatchOnImport())
