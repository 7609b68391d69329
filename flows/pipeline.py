"""The Prefect flow: validate params, then run each stale stage in order and record it in DVC.

Freshness is DVC's: a stage DVC finds fresh is skipped (and shown as skipped), a stage it
finds stale runs in-process as a Prefect task and is committed to dvc.lock, so `dvc repro`
afterwards finds nothing to do.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.dvc_bridge import open_repo, record_stage, stale_reason
from tasks.chunk import chunk_task
from tasks.clean import clean_task
from tasks.config import Params, load_params, write_overrides
from tasks.dedup import dedup_task
from tasks.encode import encode_task
from tasks.evaluate import evaluate_task
from tasks.index import index_task
from tasks.ingest import ingest_task
from tasks.io import read_manifest
from tasks.models import model_limits, resolve_model_path, token_budget
from tasks.publish import publish_task
from tasks.reduce import reduce_task
from tasks.registry import STAGES

STAGE_TASKS = {
    "ingest": ingest_task, "clean": clean_task, "chunk": chunk_task, "encode": encode_task,
    "reduce": reduce_task, "dedup": dedup_task, "index": index_task, "evaluate": evaluate_task,
    "publish": publish_task,
}


def check_against_model(params: Params) -> None:
    """Cross-checks that need the model's limits: chunk budget and PCA dimension."""
    enc = params.encode
    token_budget(enc, params.chunk.max_tokens)
    dim = model_limits(resolve_model_path(enc.model, enc.revision))["dim"]
    if params.reduce.pca_dims is not None and params.reduce.pca_dims > dim:
        raise ValueError(
            f"reduce.pca_dims: {params.reduce.pca_dims} exceeds the model's dimension {dim} "
            f"({enc.model}); use <= {dim} or null"
        )


@task(name="skip-fresh-stage", task_run_name="{stage}: fresh, skipped", cache_policy=NO_CACHE)
def skip_stage(stage: str) -> str:
    """A visible record that DVC found `stage` fresh."""
    return stage


@flow(name="embedpipe", log_prints=False)
def pipeline(root: str = ".", overrides: dict[str, Any] | None = None,
             force: bool = False) -> dict[str, Any]:
    """Run the stale stages of the pipeline in `root`.

    Args:
        root: the workspace (a git + DVC repo holding params.yaml and dvc.yaml).
        overrides: dotted params (`{"reduce.pca_dims": 64}`), validated, then written to
            params.yaml as `dvc exp run --set-param` does.
        force: run every stage even when DVC finds it fresh.
    """
    log = get_run_logger()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root_path = Path(root).resolve()
    params = load_params(root_path / "params.yaml", overrides)
    check_against_model(params)  # everything is validated before params.yaml changes
    write_overrides(root_path / "params.yaml", overrides or {})
    summary: dict[str, Any] = {"stages": []}
    with open_repo(root_path) as repo:
        for spec in STAGES:
            reason = "forced" if force else stale_reason(repo, spec.name)
            if reason is None:
                skip_stage(spec.name)
                log.info("%s: fresh, skipped", spec.name)
                summary["stages"].append({"stage": spec.name, "ran": False})
                continue
            log.info("%s: running (%s)", spec.name, reason)
            started = time.perf_counter()
            stage_task = STAGE_TASKS[spec.name].with_options(
                timeout_seconds=params.run.stage_timeout_s)
            out_dir = stage_task(root=str(root_path))
            record_stage(repo, spec.name)
            manifest = read_manifest(Path(out_dir), spec.name)
            summary["stages"].append({
                "stage": spec.name, "ran": True, "reason": reason,
                "seconds": round(time.perf_counter() - started, 2),
                "fingerprint": manifest["fingerprint"], "rows": manifest.get("rows", {}),
            })
    return summary
