"""The Prefect flow: validate params, then run each stale stage in order and record it in DVC.

Freshness is DVC's: a stage DVC finds fresh is skipped (and shown as skipped), a stage it
finds stale runs in-process as a Prefect task and is committed to dvc.lock, so `dvc repro`
afterwards finds nothing to do.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Failed, State
from prefect.tasks import exponential_backoff

from flows.artifacts import publish_summary
from flows.dvc_bridge import (
    exclude_unhashable,
    explain_stale,
    hold_repo,
    record_stage,
    refresh_inputs,
    stale_reason,
    stale_stages,
)
from flows.parameters import RunOverrides, to_dotted
from flows.stage_tasks import STAGE_TASKS
from tasks.core.catalog import MANIFEST
from tasks.core.config import Params, load_params
from tasks.core.io import read_manifest
from tasks.core.lock import workspace_lock
from tasks.core.memory import older_objects_frozen
from tasks.core.params_file import provisional_overrides
from tasks.core.registry import STAGES, get_stage
from tasks.core.shards import run_cluster
from tasks.encoders.model import check_params_against_model
from tasks.storage.locations import check_locations
from tasks.storage.published import workspace_damage
from tasks.storage.s3 import is_s3


@task(name="skip-fresh-stage", task_run_name="{stage}: fresh, skipped", cache_policy=NO_CACHE)
def skip_stage(stage: str) -> str:
    """A visible record that DVC found `stage` fresh (logged here, before Prefect's own
    "Finished in state" line of this task run)."""
    get_run_logger().info("%s: fresh, skipped", stage)
    return stage


def changed_only(path: Path, dotted: dict[str, Any]) -> dict[str, Any]:
    """The overrides whose value differs from params.yaml's (the run form sends every field,
    filled with the file's values): only those are applied and written."""
    current = load_params(path).model_dump(mode="json")

    def now(key: str) -> Any:
        node: Any = current
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return object()  # not in the params: an error load_params will name
            node = node[part]
        return node

    return {k: v for k, v in dotted.items()
            if json.loads(json.dumps(v)) != now(k)}


def check_before_running(root: Path, params: Params) -> None:
    """Every check that needs no stage to run: the model and machine cross-checks, and the
    index factory (parsed by FAISS; its nlist against the vector count of the previous run,
    when there is one; otherwise nlist is checked by the index stage, which fails before
    evaluate and publish)."""
    from tasks.indexing.factory import check_factory  # noqa: PLC0415  (faiss is slow to import)

    dim = check_params_against_model(params)
    dedup = get_stage("dedup").out_dir(params, root)
    kept = (read_manifest(dedup, "dedup")["rows"].get("kept")
            if (dedup / MANIFEST).is_file() else None)
    check_factory(params.index, dim, kept)


def mark_crashed(run_ids: list[str]) -> None:
    """Flow runs whose process died holding the workspace (killed, out of memory) are left
    Running in Prefect: the next flow run on the workspace marks them Crashed."""
    from prefect.client.orchestration import get_client  # noqa: PLC0415
    from prefect.states import Crashed  # noqa: PLC0415

    if not run_ids:
        return
    with get_client(sync_client=True) as client:
        for run_id in run_ids:
            try:
                run = client.read_flow_run(run_id)
            except Exception:  # another Prefect server, or the run is gone: nothing to mark
                continue
            if run.state is not None and not run.state.is_final():
                client.set_flow_run_state(run.id, Crashed(
                    message="its process died holding the workspace; marked by the next "
                            "run"), force=True)
                get_run_logger().warning("flow run %s had died: marked Crashed", run.name)


def stage_timeout(params: Params, stage: str) -> int:
    """The stage's timeout: its own entry in run.stage_timeouts, else run.stage_timeout_s."""
    return params.run.stage_timeouts.get(stage, params.run.stage_timeout_s)


def network_retries(params: Params, stage: str) -> dict[str, Any]:
    """Retries with backoff for stages that talk to remote storage; none for compute."""
    remote = {"ingest": params.ingest.source, "publish": params.publish.target}.get(stage, "")
    if not is_s3(remote):
        return {}
    return {"retries": 3, "retry_delay_seconds": exponential_backoff(backoff_factor=10)}


def stage_row(stage: str, out_dir: Path, reason: str, seconds: float | None,
              why: str | None = None) -> dict[str, Any]:
    """One stage's line in the run summary: `reason` in short, `why` in full (DVC's every
    changed path); `seconds` is None when it was skipped."""
    manifest = read_manifest(out_dir, stage)
    return {"stage": stage, "ran": seconds is not None, "reason": reason,
            "why": why or reason,
            "seconds": round(seconds or 0.0, 2), "fingerprint": manifest["fingerprint"],
            "rows": manifest.get("rows", {})}


class Staleness:
    """DVC's status entries of each stage in turn (`run_stages` says when it asks)."""

    def __init__(self, repo: Any) -> None:
        self.repo = repo
        self.every: dict[str, list[Any]] | None = None  # every stage's, asked at most once

    def of(self, stage: str, ran_any: bool) -> list[Any] | None:
        """`stage`'s entries, None when fresh: asked alone for the first stage and after a
        stage has run, else read from one status of every stage."""
        if ran_any or stage == STAGES[0].name:
            return stale_reason(self.repo, stage)
        if self.every is None:
            self.every = stale_stages(self.repo)
        return self.every.get(stage)


def run_stages(repo: Any, root: Path, params: Params, force: bool, checked: bool,
               started: Callable[[], None] = lambda: None) -> list[dict[str, Any]]:
    """Run the stale stages in order, recording each in dvc.lock; one row per stage.

    DVC is asked about the first stage alone: where it is stale (new documents), it runs and
    each later stage is asked in turn, as the outputs it depends on may have changed; where
    it is fresh, DVC is asked once for every stage (one parse of dvc.yaml and dvc.lock, not
    one per stage), until a stage has run. `checked`: the params have had the
    model cross-check; otherwise it runs before the first stage does (it loads the tokenizer,
    which a run that skips everything does not need). `started()` is called just before
    the first stage runs.
    """
    log = get_run_logger()
    rows: list[dict[str, Any]] = []
    status = Staleness(repo)
    ran_any = False
    for spec in STAGES:
        changes = None if force else status.of(spec.name, ran_any)
        repair = (workspace_damage(root, params) if spec.name == "publish" and not force
                  and changes is None else None)
        out_dir = spec.out_dir(params, root)
        if not force and changes is None and repair is None:
            skip_stage(spec.name)
            rows.append(stage_row(spec.name, out_dir, "fresh", None))
            continue
        if not checked:
            check_before_running(root, params)
            checked = True
        reason, why = (("forced", "forced") if force else (repair, repair) if repair else
                       explain_stale(root, spec.name, changes))
        log.info("%s: running (%s)", spec.name, reason)
        started()
        begun = time.perf_counter()
        STAGE_TASKS[spec.name].with_options(
            timeout_seconds=stage_timeout(params, spec.name),
            **network_retries(params, spec.name))(root=str(root))
        record_stage(repo, spec.name)
        ran_any = True
        rows.append(stage_row(spec.name, out_dir, reason, time.perf_counter() - begun, why))
    return rows


SETTINGS_ERROR = "settings: "


class SaidOnce(logging.Filter):
    """Prefect's engine logs a failed flow run's exception with its traceback once the flow
    has returned; a settings error was said in one line already."""

    def filter(self, record: logging.LogRecord) -> bool:
        err = record.exc_info[1] if record.exc_info else None
        return err is None or not str(err).startswith(SETTINGS_ERROR)


def run_settings(root: Path, requested: dict[str, Any]) -> tuple[dict[str, Any], Params]:
    """The overrides that differ from params.yaml and the params they give, checked before
    anything is written (ValueError names the key and what is allowed)."""
    dotted = changed_only(root / "params.yaml", requested)
    params = load_params(root / "params.yaml", dotted)
    check_locations(params, root)
    if dotted:
        check_before_running(root, params)  # before params.yaml changes
    return dotted, params


@flow(name="embedpipe", log_prints=False, validate_parameters=True)
def pipeline(root: str = ".", overrides: RunOverrides | None = None,
             set_params: dict[str, Any] | None = None, force: bool = False,
             on_busy: Literal["wait", "fail"] | None = None) -> dict[str, Any] | State:
    """Run the stale stages of the embedpipe pipeline in a workspace.

    Args:
        root: the workspace (a git + DVC repo holding params.yaml and dvc.yaml).
        overrides: typed per-stage overrides; empty fields keep params.yaml's values.
        set_params: dotted overrides (`{"reduce.pca_dims": 64}`), as `--set` gives them.
        force: run every stage even when DVC finds it fresh.
        on_busy: when another run holds the workspace: 'wait' or 'fail' (default: params).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root_path = Path(root).resolve()
    try:
        dotted, params = run_settings(root_path, {**to_dotted(overrides),
                                                  **(set_params or {})})
    except ValueError as err:  # the person's settings, not a bug: one line, no traceback
        get_run_logger().error("%s%s", SETTINGS_ERROR, err)
        logging.getLogger("prefect.flow_runs").addFilter(SaidOnce())
        return Failed(message=f"{SETTINGS_ERROR}{err}")
    busy = on_busy or params.run.on_busy
    for name in ("prefect.flow_runs", "prefect.task_runs"):  # the stages' run loggers
        logging.getLogger(name).setLevel(params.run.log_level)
    exclude_unhashable(root_path, params.ingest.source)
    with older_objects_frozen(), hold_repo(root_path, busy == "wait") as repo, workspace_lock(
            root_path, "embedpipe flow", busy, params.run.lock_wait_s,
            run_id=str(flow_run.id)) as dead_runs:
        mark_crashed(dead_runs)
        refresh_inputs(repo, params)
        with provisional_overrides(root_path / "params.yaml", dotted) as keep, run_cluster(
                params.run):
            rows = run_stages(repo, root_path, params, force, checked=bool(dotted),
                              started=keep)
    summary = {"stages": rows, "overrides": dotted,
               "params": params.model_dump(mode="json")}
    publish_summary(root_path, params, summary)
    return summary
