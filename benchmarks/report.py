"""What every benchmark writes: the machine it ran on, and its report as JSON and markdown."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def cpu_label() -> str:
    """'<cores> cores, <model name>' from /proc/cpuinfo."""
    try:
        model = next(line.split(":", 1)[1].strip() for line in
                     Path("/proc/cpuinfo").read_text().splitlines() if "model name" in line)
    except (OSError, StopIteration):
        model = "unknown CPU"
    return f"{os.cpu_count()} cores, {model}"


def save(out: Path, name: str, report: dict[str, Any], markdown: str) -> None:
    """Write `<out>/<name>.json` and `.md`, and print the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2))
    (out / f"{name}.md").write_text(markdown)
    print(markdown)


def timed_stages(ws: Path, names: Iterable[str]) -> dict[str, float]:
    """Run stages in-process in the workspace `ws`, in order; seconds each."""
    from flows.stage_tasks import STAGE_TASKS  # noqa: PLC0415  (the stages load slowly)

    seconds = {}
    for name in names:
        started = time.perf_counter()
        STAGE_TASKS[name].fn(root=str(ws))
        seconds[name] = round(time.perf_counter() - started, 2)
    return seconds
