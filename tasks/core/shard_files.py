"""Checksum-named shard files of the content-addressed caches (encode's vector cache, the
per-document result caches): bad shards dropped, and what a killed writer left behind."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from tasks.core.fingerprint import sha256_file
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


def checksum_problem(shard: Path, name: re.Pattern[str],
                     unnamed: str = "no checksum in its name") -> str | None:
    """Why a shard's bytes cannot be trusted: its name (`name`, the sha256 as group 1)
    carries no checksum (`unnamed`), or its bytes do not match it; None when they do."""
    found = name.fullmatch(shard.name)
    if found is None:
        return unnamed
    if sha256_file(shard) != found.group(1):
        return "its bytes do not match the checksum in its name (corrupted)"
    return None
