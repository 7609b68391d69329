"""Lineage: the chain of stage manifests behind an output, and the index's metadata.json."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.core.config import Params
from tasks.core.fingerprint import sha256_file, sha256_text
from tasks.core.io import library_versions, read_manifest
from tasks.core.registry import STAGE_NAMES, deciding_params, get_stage


def lineage_chain(root: Path, params: Params, start: str) -> list[dict[str, Any]]:
    """Manifests from `start` back to ingest, latest stage first.

    Raises ValueError when an ancestor's folder holds another run than the one `start`
    was made from (its lineage names a different fingerprint).
    """
    first = read_manifest(get_stage(start).out_dir(params, root), start)
    expected = first.get("lineage", {})
    chain = [first]
    for name in reversed(STAGE_NAMES[:STAGE_NAMES.index(start)]):
        if name not in expected:
            continue
        manifest = read_manifest(get_stage(name).out_dir(params, root), name)
        if manifest["fingerprint"] != expected[name]:
            raise ValueError(
                f"lineage: {start} was made from {name} {expected[name][:12]}, but "
                f"{get_stage(name).folder} now holds {manifest['fingerprint'][:12]}"
            )
        chain.append(manifest)
    return chain


def code_version(root: Path) -> dict[str, str | None]:
    """Git commit of the workspace (if any) and a hash of the stage code itself."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=False, timeout=10).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        commit = None
    tasks_dir = Path(__file__).resolve().parents[1]
    files = sorted(tasks_dir.rglob("*.py"))
    code = sha256_text("".join(f"{p.relative_to(tasks_dir).as_posix()}:{sha256_file(p)}\n"
                               for p in files))
    return {"git_commit": commit, "tasks_sha256": code,
            "embedpipe": library_versions().get("embedpipe")}


def index_metadata(run: Any, fingerprint: str, model: dict[str, Any],
                   card: dict[str, Any]) -> dict[str, Any]:
    """metadata.json beside the index: model, vectors, preprocessing, corpus, params, code.

    The corpus is named by its digest and the params less the neutral keys (where the corpus
    lay, how the run ran): the folder's bytes depend on what decides it, and on the report
    keys (`catalog.REPORTED_KEYS`: the date, the code's commit) only."""
    chain = {m["stage"]: m for m in lineage_chain(run.root, run.params, "dedup")}
    return {
        "index_fingerprint": fingerprint,
        "embedding_model": {k: model.get(k) for k in (
            "name", "revision", "fingerprint", "files_sha256", "dim", "max_seq_length",
            "normalize", "passage_prefix", "query_prefix", "tuned")},
        "vector_fingerprint": run.inputs["dedup"]["fingerprint"],
        "vector_space": model.get("space"),
        "dim": card["d"],
        "preprocessing": {s: chain[s]["config"] for s in ("clean", "chunk", "reduce", "dedup")},
        "corpus": {"sha256": chain["ingest"]["corpus_sha256"],
                   "files": chain["ingest"]["input_files"], "rows": chain["ingest"]["rows"]},
        "lineage": run.lineage(fingerprint),
        "params": deciding_params(run.params),
        "code": code_version(run.root),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }
