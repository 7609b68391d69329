"""Checksum-named shard files of the content-addressed caches (encode's vector cache, the
per-document result caches): bad shards dropped, and what a killed writer left behind."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from tasks.core.io import pid_alive

log = logging.getLogger(__name__)


def check_shards(shards: Iterable[Path], problem_of: Callable[[Path], str | None],
                 label: str, again: str, drop: bool) -> list[tuple[Path, str]]:
    """(shard, problem) of each shard `problem_of` finds fault with, named in the log (as
    `label`'s) and, with `drop`, deleted so that its entries are computed `again`."""
    bad = []
    for shard in shards:
        problem = problem_of(shard)
        if problem:
            log.warning("%s: %s %s; %s", label, shard, problem,
                        f"dropped, {again}" if drop else "not used")
            bad.append((shard, problem))
            if drop:
                shard.unlink(missing_ok=True)
    return bad


def remove_dead_temps(folder: Path, pattern: str) -> int:
    """Delete the files matching `pattern` (`.part-*.tmp-PID`) whose writer PID is gone: a
    killed writer's half-written shards. Returns how many."""
    gone = 0
    for tmp in Path(folder).glob(pattern):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            gone += 1
    return gone
