"""The cyclic collector around stages and runs (tasks/core/memory.py): what was alive when a
stage or run began is frozen while it runs and given back when the outermost block ends."""

from __future__ import annotations

import gc
import weakref

from flows.stage_tasks import STAGE_TASKS
from tasks.core.memory import frozen_stage, imported_for_good, older_objects_frozen


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> weakref.ref[Node]:
    """A two-node reference cycle nothing else holds; a weak reference to one node."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_a_stage_function_runs_with_older_objects_frozen_and_gives_them_back() -> None:
    gc.collect()
    older = cycle()  # garbage already, left for the collector
    seen = {}

    @frozen_stage
    def stage() -> str:
        seen["frozen"] = gc.get_freeze_count()
        gc.collect()  # a full collection inside the stage does not scan (or free) it
        seen["older_alive"] = older() is not None
        young = cycle()
        gc.collect()  # but what the stage made and dropped is collected
        seen["young_alive"] = young() is not None
        return "done"

    assert stage() == "done"
    assert seen == {"frozen": seen["frozen"], "older_alive": True, "young_alive": False}
    assert seen["frozen"] > 0
    assert gc.get_freeze_count() == 0  # given back
    gc.collect()
    assert older() is None


def test_stages_inside_a_run_keep_the_run_frozen_until_it_ends() -> None:
    gc.collect()
    with older_objects_frozen():
        before = cycle()
        frozen_stage(lambda: None)()  # a stage ends: what it froze stays frozen in the run
        assert gc.get_freeze_count() > 0
        gc.collect()
        assert before() is not None
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert before() is None


def test_imports_kept_for_good_are_frozen_with_the_collector_on_after() -> None:
    with older_objects_frozen():
        with imported_for_good():
            assert not gc.isenabled()
            import json  # noqa: F401, PLC0415
        assert gc.isenabled()
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


def test_every_stage_task_runs_frozen() -> None:
    """DVC's path (`python -m tasks.<stage>`), `embedpipe stage` and the flow's task all
    call the stage's `fn`."""
    for name in ("ingest", "index", "evaluate"):
        fn = STAGE_TASKS[name].fn
        assert fn.__wrapped__.__name__ == f"{name}_task"
