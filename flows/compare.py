"""Compare configurations: run the pipeline once per variant in a scratch copy of the
workspace (stage outputs copied in, so DVC reruns only what each variant changes) and
collect metrics, time and index size side by side."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tasks.core.catalog import INDEX_MODEL, METRICS_FILE, SOURCE_LISTING
from tasks.core.config import load_params, parse_override
from tasks.core.io import read_manifest
from tasks.core.registry import get_stage
from tasks.evaluation.metrics import COMPARE_COLUMNS

COPIED = ("params.yaml", "dvc.yaml", "dvc.lock", ".dvc/config", ".dvcignore", "tasks", "flows")


def parse_variant(text: str) -> dict[str, Any]:
    """'a.b=1,c.d=x' -> {'a.b': 1, 'c.d': 'x'}."""
    return dict(parse_override(part) for part in text.split(",") if part.strip())


def scratch_copy(root: Path, dest: Path) -> Path:
    """Code, params, DVC state and stage outputs of `root` in `dest` (a new git repo)."""
    params = load_params(root / "params.yaml")
    for rel in COPIED:
        src = root / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    data = root / params.paths.data
    for out in data.glob("[0-9][0-9]_*"):
        shutil.copytree(out, dest / params.paths.data / out.name)
    for rel in (Path(params.paths.data) / SOURCE_LISTING, Path(METRICS_FILE)):
        if (root / rel).is_file():  # outs beside the stage folders: missing, a stage reruns
            shutil.copy2(root / rel, dest / rel)
    for cache in (params.paths.vector_cache, params.paths.result_cache):
        # the persistent outs (content-addressed shards, never rewritten in place: a new
        # shard is a new file) linked, not copied: a missing one reran ingest -> export
        if not Path(cache).is_absolute() and (root / cache).is_dir():
            shutil.copytree(root / cache, dest / cache, copy_function=_link_or_copy)
    source = Path(params.ingest.source)
    if not source.is_absolute():  # same relative path, same fingerprint, no copy
        (dest / source).parent.mkdir(parents=True, exist_ok=True)
        (dest / source).symlink_to((root / source).resolve(), target_is_directory=True)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    # Share the DVC cache: content-addressed, and DVC counts an out missing from it as stale.
    (dest / ".dvc" / "config.local").write_text(
        f"[cache]\n    dir = {(root / '.dvc' / 'cache').resolve()}\n", encoding="utf-8")
    return dest


def _link_or_copy(src: str, dst: str) -> None:
    """A hard link where the file system allows one, else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def run_variant(root: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """Run the flow with `overrides` in a scratch copy; return its metrics row."""
    from flows.pipeline import pipeline  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="embedpipe-compare-") as tmp:
        ws = scratch_copy(root, Path(tmp))
        started = time.perf_counter()
        summary = pipeline(root=str(ws), set_params=overrides)
        seconds = time.perf_counter() - started
        params = load_params(ws / "params.yaml")
        manifest = read_manifest(get_stage("evaluate").out_dir(params, ws), "evaluate")
        model = json.loads((get_stage("index").out_dir(params, ws) / INDEX_MODEL.name
                            ).read_text(encoding="utf-8"))
    metrics = manifest["metrics"]
    return {"variant": ", ".join(f"{k}={v}" for k, v in overrides.items()) or "baseline",
            "seconds": round(seconds, 1),
            "stages_run": ",".join(s["stage"] for s in summary["stages"] if s["ran"]) or "-",
            "model": model["name"],  # `<base>+finetune` when the gate took a tuned model
            **{c: metrics.get(c) for c in COMPARE_COLUMNS}}


def compare(root: Path, variants: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Baseline plus each variant, one row each."""
    return [run_variant(root, v) for v in [{}, *variants]]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows as a Markdown table."""
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(
            f"{r[c]:.4f}" if isinstance(r[c], float) and c != "seconds" else str(r[c])
            for c in cols) + " |")
    return "\n".join(lines)
