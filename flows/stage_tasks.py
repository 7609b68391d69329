"""Stage name -> its task (`tasks.core.runtime.StageTask`), each stage module imported on
first use. Apart from the flow so that `embedpipe stage`, which calls a task's function
without Prefect, imports neither Prefect nor the flow."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from tasks.core.registry import STAGE_NAMES


class StageTasks(Mapping[str, Any]):
    """Stage name -> its task, imported on first use.

    A run whose stages are all fresh then never imports faiss, scikit-learn, SciPy, pandas,
    selectolax or ftfy: importing every stage module up front cost seconds on each
    `embedpipe run` (torch and transformers are imported lazily by the stages themselves).
    """

    def __getitem__(self, name: str) -> Any:
        if name not in STAGE_NAMES:
            raise KeyError(name)
        return getattr(importlib.import_module(f"tasks.{name}"), f"{name}_task")

    def __iter__(self) -> Iterator[str]:
        return iter(STAGE_NAMES)

    def __len__(self) -> int:
        return len(STAGE_NAMES)


STAGE_TASKS = StageTasks()
