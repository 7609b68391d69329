"""DVC is the one judge of freshness: ask it which stages are stale, record what ran."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import chdir, contextmanager
from pathlib import Path
from typing import Any

import yaml

from tasks.core.registry import STAGE_NAMES, dvc_plots, dvc_stages


@contextmanager
def open_repo(root: Path | str) -> Iterator[Any]:
    """The DVC repo at `root` (imported lazily: dvc is slow to import)."""
    from dvc.repo import Repo  # noqa: PLC0415

    logging.getLogger("dvc").setLevel(logging.WARNING)  # per-commit chatter, not news

    # DVC resolves some output paths against the working directory, not root_dir.
    with chdir(root):
        repo = Repo(str(root), _wait_for_lock=True)
        try:
            yield repo
        finally:
            repo.close()


def describe_changes(changes: list[Any]) -> str:
    """DVC's status entries for one stage as one readable line."""
    parts = []
    for change in changes:
        if isinstance(change, str):
            parts.append(change)
            continue
        for kind, detail in change.items():
            if isinstance(detail, dict):
                items = []
                for path, what in detail.items():
                    if isinstance(what, dict):
                        items += [f"{k} {v}" for k, v in what.items()]
                    else:
                        items.append(f"{path} {what}")
                parts.append(f"{kind}: {', '.join(items)}")
            else:
                parts.append(f"{kind}: {detail}")
    return "; ".join(parts)


def stale_stages(repo: Any) -> dict[str, str]:
    """Stage name -> why DVC would rerun it now, for every stale stage (fresh ones absent).

    One `dvc status` for the whole pipeline: DVC parses dvc.yaml and dvc.lock once, where a
    call per stage parses them again for each.
    """
    return {name: describe_changes(changes) for name, changes in repo.status().items()
            if changes}


def stale_reason(repo: Any, stage: str) -> str | None:
    """Why DVC would rerun `stage` now, or None when it is fresh."""
    status = repo.status(targets=[stage])
    changes = status.get(stage)
    if not changes:
        return None
    return describe_changes(changes)


def record_stage(repo: Any, stage: str) -> None:
    """Write the stage's current deps, params and outs into dvc.lock (`dvc commit -f`)."""
    repo.commit(stage, force=True)


def pipeline_status(root: Path | str) -> dict[str, str | None]:
    """Stage name -> None when fresh, else the reason it is stale."""
    with open_repo(root) as repo:
        stale = stale_stages(repo)
    return {name: stale.get(name) for name in STAGE_NAMES}


def render_dvc_yaml(data_dir: str = "data") -> str:
    """dvc.yaml text generated from the stage registry."""
    header = ("# Generated from tasks/core/registry.py by `embedpipe dvc-yaml`; "
              "do not edit by hand.\n")
    body = yaml.safe_dump({"stages": dvc_stages(data_dir), "plots": dvc_plots(data_dir)},
                          sort_keys=False, width=100)
    return header + body
