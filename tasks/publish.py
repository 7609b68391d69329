"""publish: an index folder that passed the gate -> `<target>/<version>/` + `CURRENT` pointer.

Invariant: readers follow `CURRENT`, written last and atomically, so they see the previous
index or the new one, never a half-copied folder. Nothing is published when the gate failed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.fingerprint import stage_fingerprint
from tasks.io import StageOutput, write_json_atomic
from tasks.runtime import main, start_stage, task_logger

POINTER = "CURRENT"


def version_name(index_manifest: dict[str, Any]) -> str:
    """Published folder name: the index fingerprint (same index, same name)."""
    return f"index-{index_manifest['fingerprint'][:16]}"


def read_pointer(target: Path) -> dict[str, Any] | None:
    """The CURRENT pointer of a publish target, or None when nothing is published."""
    path = target / POINTER
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def current_index(target: Path) -> Path | None:
    """The folder CURRENT points at."""
    pointer = read_pointer(target)
    return None if pointer is None else target / pointer["version"]


def publish_folder(index_dir: Path, target: Path, version: str, pointer: dict[str, Any],
                   keep: int) -> Path:
    """Copy `index_dir` to `target/version` (temp name, then rename), then move CURRENT."""
    target.mkdir(parents=True, exist_ok=True)
    final = target / version
    if not final.is_dir():
        tmp = target / f".{version}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(index_dir, tmp)
        os.replace(tmp, final)
    write_json_atomic(target / POINTER, {"version": version, **pointer})
    versions = sorted((p for p in target.iterdir() if p.is_dir() and p.name.startswith("index-")
                       and p.name != version), key=lambda p: p.stat().st_mtime)
    for old in versions[:max(0, len(versions) - (keep - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    return final


@task(name="publish", cache_policy=NO_CACHE)
def publish_task(root: str = ".") -> str:
    """Publish the evaluated index when its gate passed."""
    run = start_stage("publish", root)
    cfg, log = run.params.publish, task_logger()
    gate = run.inputs["evaluate"].get("gate", {})
    if not gate.get("passed"):
        raise ValueError(f"publish: the evaluation gate did not pass ({gate.get('failures')}); "
                         "the published index is unchanged")
    target = (run.root / cfg.target).resolve()
    version = version_name(run.inputs["index"])
    final = publish_folder(run.input_dirs["index"], target, version, {
        "index_fingerprint": run.inputs["index"]["fingerprint"],
        "evaluate_fingerprint": run.inputs["evaluate"]["fingerprint"]}, cfg.keep)
    fp = stage_fingerprint("publish", cfg, run.input_fingerprints)
    out = StageOutput(run.out_dir, "publish", fp)
    out.write_json("receipt.json", {"target": str(target), "version": version})
    out.commit(run.manifest(fp, cfg, published=str(final), rows={}))
    log.info("publish: %s -> %s", run.input_dirs["index"], final)
    return str(run.out_dir)


if __name__ == "__main__":
    main(publish_task)
