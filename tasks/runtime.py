"""What every stage task shares: its logger, its folders, its upstream manifests, `__main__`."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.config import Params, load_params
from tasks.io import check_lineage, read_manifest
from tasks.lock import workspace_lock
from tasks.registry import get_stage


def task_logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger inside a run, the module logger under `python -m` (DVC)."""
    from prefect.exceptions import MissingContextError  # noqa: PLC0415
    from prefect.logging import get_run_logger  # noqa: PLC0415

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("embedpipe")


def progress_reporter(key: str, what: str) -> Callable[[int, int], None] | None:
    """A callback updating a Prefect progress artifact inside a run, None outside one."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact  # noqa: PLC0415
    from prefect.context import TaskRunContext  # noqa: PLC0415

    if TaskRunContext.get() is None:
        return None
    artifact_id = create_progress_artifact(0.0, key=key, description=f"{what} progress")
    log = task_logger()

    def report(done: int, total: int) -> None:
        update_progress_artifact(artifact_id, 100.0 * done / max(total, 1))
        log.info("%s: %d / %d", what, done, total)

    return report


@dataclass
class StageRun:
    """One stage's run: its params, output folder, upstream manifests, timings."""

    name: str
    root: Path
    params: Params
    out_dir: Path
    inputs: dict[str, dict[str, Any]]
    input_dirs: dict[str, Path]
    started: float = field(default_factory=time.perf_counter)

    @property
    def input_fingerprints(self) -> dict[str, str]:
        return {k: m["fingerprint"] for k, m in self.inputs.items()}

    def lineage(self, fingerprint: str) -> dict[str, str]:
        """Every ancestor stage's fingerprint, plus this one."""
        out: dict[str, str] = {}
        for m in self.inputs.values():
            out.update(m.get("lineage", {}))
        out[self.name] = fingerprint
        return out

    def manifest(self, fingerprint: str, config: Any, **extra: Any) -> dict[str, Any]:
        """The common manifest fields; `extra` adds counts, rejects and the like."""
        cfg = config.model_dump(mode="json") if hasattr(config, "model_dump") else config
        return {
            "inputs": self.input_fingerprints,
            "lineage": self.lineage(fingerprint),
            "config": cfg,
            "seconds": round(time.perf_counter() - self.started, 3),
            **extra,
        }


def start_stage(name: str, root: str | Path = ".") -> StageRun:
    """Load params, find the stage's folders and read (and cross-check) its inputs."""
    root = Path(root).resolve()
    params = load_params(root / "params.yaml")
    spec = get_stage(name)
    input_dirs = {i: get_stage(i).out_dir(params, root) for i in spec.inputs}
    inputs = {i: read_manifest(d, i) for i, d in input_dirs.items()}
    check_lineage(inputs)
    return StageRun(name, root, params, spec.out_dir(params, root), inputs, input_dirs)


def main(task: Callable[..., Any]) -> None:
    """`python -m tasks.<stage>`: run the task's function without Prefect (DVC's path)."""
    fn = getattr(task, "fn", task)
    root = os.environ.get("DVC_ROOT", ".")
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_cfg = load_params(Path(root) / "params.yaml").run
        logging.getLogger().setLevel(run_cfg.log_level)
        what = f"dvc stage {getattr(task, 'name', fn.__name__)}"
        with workspace_lock(root, what, run_cfg.on_busy, run_cfg.lock_wait_s):
            fn(root=root)
    except (ValueError, RuntimeError) as err:
        logging.getLogger("embedpipe").error("%s", err)
        sys.exit(2)
