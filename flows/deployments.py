"""Two deployments of the pipeline flow, served from one process.

`nightly` runs on the cron and time zone in params.yaml (`run.schedule_cron`, `run.timezone`);
`manual` has no schedule and is what the UI's "Custom run" form triggers, with the typed
per-stage overrides. Each allows one run at a time; the workspace lock keeps the two (and
`dvc repro`, and the CLI) from interleaving.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import serve
from prefect.schedules import Cron

from flows.pipeline import pipeline
from tasks.core.config import load_params

FLOW_NAME = "embedpipe"


def build_deployments(root: Path) -> list[Any]:
    """The `nightly` and `manual` deployments for the workspace at `root`."""
    root = Path(root).resolve()
    run_cfg = load_params(root / "params.yaml").run
    common = {"parameters": {"root": str(root)}, "concurrency_limit": 1,
              "tags": ["embedpipe"], "enforce_parameter_schema": True}
    nightly = pipeline.to_deployment(
        name="nightly", schedules=[Cron(run_cfg.schedule_cron, timezone=run_cfg.timezone)],
        description=f"embedpipe on {root}, {run_cfg.schedule_cron} ({run_cfg.timezone})",
        **common)
    manual = pipeline.to_deployment(
        name="manual", description=f"embedpipe on {root}; trigger with overrides from the UI",
        **common)
    return [nightly, manual]


def serve_deployments(root: Path) -> None:
    """Register both deployments and run their flow runs until interrupted."""
    serve(*build_deployments(root), print_starting_message=True)
