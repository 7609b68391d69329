"""The append-only run registry: one JSON line per evaluated run, and diffs between runs."""

from __future__ import annotations

import fcntl
import json
from datetime import datetime
from pathlib import Path
from typing import Any


def read_runs(path: Path) -> list[dict[str, Any]]:
    """All runs in the registry, oldest first (empty when there is none yet)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def append_run(path: Path, record: dict[str, Any]) -> int:
    """Append `record` as the next run; returns its run number. Safe against a concurrent append."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        number = sum(1 for line in f if line.strip()) + 1
        f.write(json.dumps({"run": number, **record}, sort_keys=True) + "\n")
    return number


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys."""
    if not isinstance(obj, dict):
        return {prefix: obj}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def diff_runs(a: dict[str, Any], b: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Params that changed (old, new) and numeric metric deltas between two runs."""
    pa_, pb = flatten(a.get("params", {})), flatten(b.get("params", {}))
    params = {k: (pa_.get(k), pb.get(k)) for k in sorted(pa_.keys() | pb.keys())
              if pa_.get(k) != pb.get(k)}
    ma, mb = flatten(a.get("metrics", {})), flatten(b.get("metrics", {}))
    metrics = {}
    for k in sorted(ma.keys() | mb.keys()):
        va, vb = ma.get(k), mb.get(k)
        if isinstance(va, int | float) and isinstance(vb, int | float) and va != vb:
            metrics[k] = (va, vb, round(vb - va, 6))
    stages = {k: (a["fingerprints"].get(k, "")[:12], b["fingerprints"].get(k, "")[:12])
              for k in a.get("fingerprints", {}) if
              a["fingerprints"].get(k) != b.get("fingerprints", {}).get(k)}
    return {"params": params, "metrics": metrics, "stages": stages}


def run_record(when: datetime, fingerprints: dict[str, str], params: dict[str, Any],
               metrics: dict[str, Any]) -> dict[str, Any]:
    """One registry line: when, the stage fingerprints, the params and the metrics (the
    per-setting sweep left out)."""
    return {"time_utc": when.isoformat(timespec="seconds"), "fingerprints": fingerprints,
            "params": params, "metrics": {k: v for k, v in metrics.items() if k != "sweep"},
            "gate": metrics["gate"]["passed"]}
