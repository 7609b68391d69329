"""Two deployments of the pipeline flow, served from one process.

`nightly` runs on the cron and time zone in params.yaml (`run.schedule_cron`, `run.timezone`);
`manual` has no schedule and is what the UI's "Custom run" form triggers, with the typed
per-stage overrides, its form filled from params.yaml (`flows.run_form`). Each allows one run
at a time; the workspace lock keeps the two (and `dvc repro`, and the CLI) from interleaving.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from prefect import serve
from prefect.schedules import Cron
from prefect.utilities.callables import ParameterSchema

from flows.pipeline import pipeline
from flows.run_form import form_schema
from tasks.core.config import load_params

FLOW_NAME = "embedpipe"
FORM_REFRESH_S = 2.0  # how often `serve` looks for a changed params.yaml


def build_deployments(root: Path) -> list[Any]:
    """The `nightly` and `manual` deployments for the workspace at `root`."""
    root = Path(root).resolve()
    params = load_params(root / "params.yaml")
    run_cfg = params.run
    common = {"parameters": {"root": str(root)}, "concurrency_limit": 1,
              "tags": ["embedpipe"], "enforce_parameter_schema": True}
    nightly = pipeline.to_deployment(
        name="nightly", schedules=[Cron(run_cfg.schedule_cron, timezone=run_cfg.timezone)],
        description=f"embedpipe on {root}, {run_cfg.schedule_cron} ({run_cfg.timezone})",
        **common)
    manual = pipeline.to_deployment(
        name="manual", description=f"embedpipe on {root}; trigger with overrides from the UI",
        **common)
    schema = manual._parameter_openapi_schema.model_dump(exclude_unset=True)
    manual._parameter_openapi_schema = ParameterSchema(**form_schema(schema, params))
    return [nightly, manual]


def keep_form_current(root: Path, stop: threading.Event) -> None:
    """Register `manual` again whenever params.yaml changes (a person's edit, a run's
    overrides), so its form shows, and a submit keeps, what the file holds now."""
    path = Path(root).resolve() / "params.yaml"
    seen = path.stat().st_mtime_ns
    while not stop.wait(FORM_REFRESH_S):
        changed = path.stat().st_mtime_ns
        if changed == seen:
            continue
        seen = changed
        try:
            build_deployments(root)[1].apply()
        except Exception as err:  # a half-saved or invalid file: keep the last good form
            logging.getLogger("embedpipe").warning(
                "run form not refreshed (%s); it shows the last valid params.yaml", err)


def serve_deployments(root: Path) -> None:
    """Register both deployments and run their flow runs until interrupted; the manual
    deployment's form follows params.yaml."""
    stop = threading.Event()
    threading.Thread(target=keep_form_current, args=(root, stop), daemon=True,
                     name="embedpipe-run-form").start()
    try:
        serve(*build_deployments(root), print_starting_message=True)
    finally:
        stop.set()
