"""Handing memory a stage freed back to the system, and keeping the cyclic collector to
what a stage made.

Stages run one after the other in one process under `embedpipe run`, and what one freed
stays with the process's allocators unless it is handed back: Arrow's pool (mimalloc) keeps
freed pages for its own reuse, and glibc keeps freed heap memory that numpy's large
allocations (memory-mapped) never reuse. Called at a stage's start and end, so a stage's
peak is its own data on top of what is alive, not on top of what earlier stages freed.

Python's full collections traverse every object the process holds, and a stage process
holds every library it imported (under `embedpipe run`, Prefect's and DVC's too): each stage
and the run are blocks in which the older objects are frozen (`older_objects_frozen`).
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache, wraps
from typing import Any

import pyarrow as pa


def release_freed_memory() -> None:
    """Return the free pages of Arrow's pool and of glibc's heap to the system (glibc's:
    where it has `malloc_trim`); well under a millisecond a call. No `gc.collect()`: with
    every stage's libraries imported a full collection took 0.5 s a call here, and runs
    with it showed no lower peaks."""
    pa.default_memory_pool().release_unused()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


_scopes = 0  # nested `older_objects_frozen` blocks open now


@contextmanager
def older_objects_frozen() -> Iterator[None]:
    """A block (a stage, a whole run) during which what was alive when it began (the
    imported libraries, the flow's objects, earlier stages' results) is out of the cyclic
    collector's sight: its full collections scan only what it made. One took 93 ms of the
    index stage's 0.5 s search choice, traversing the libraries' objects; 0.25 s between
    stages of a sample run. Given back when the outermost block ends, not before (given
    back at each stage's end, the next full collection came at once and scanned
    everything): cyclic garbage among those older objects waits till then. Memory freed by
    reference counting, most of it, is freed at once either way."""
    global _scopes  # noqa: PLW0603  (the collector is one per process)
    gc.freeze()
    _scopes += 1
    try:
        yield
    finally:
        _scopes -= 1
        if not _scopes:
            gc.unfreeze()


def frozen_stage(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` run as an `older_objects_frozen` block."""
    @wraps(fn)
    def frozen(*args: Any, **kwargs: Any) -> Any:
        with older_objects_frozen():
            return fn(*args, **kwargs)

    return frozen


@contextmanager
def imported_for_good() -> Iterator[None]:
    """A block that imports what the process keeps to its end (`embedpipe run` importing
    Prefect and the flow, 2-3 s): no cyclic collection while it runs, and what it made
    frozen after, till the end of the run's `older_objects_frozen` block (the flow's),
    which gives back everything frozen: full collections took 0.3 s before the first stage
    of a sample run."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


@cache
def _libc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, macOS): nothing to trim
        return None
    return libc if hasattr(libc, "malloc_trim") else None
