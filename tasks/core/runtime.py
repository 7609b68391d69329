"""The stage runner: what every stage task shares.

`start_stage` loads params and the stage's upstream manifests; `StageRun` reads inputs by
catalog entry and opens the output (`with run.output(fp, cfg) as out:` commits the folder
when the block ends and drops it on any exception); `main` is `python -m tasks.<stage>`;
`stage_task` makes a stage's function its Prefect task, importing Prefect only when a flow
runs it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property, update_wrapper
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tasks.core import io
from tasks.core.catalog import VECTOR_COLUMN, StageFile
from tasks.core.config import Params, load_params
from tasks.core.lock import workspace_lock
from tasks.core.memory import frozen_stage, release_freed_memory
from tasks.core.progress import Progress, prefect_loaded
from tasks.core.registry import TASKS_DIR, declared_params, fingerprint, get_stage, module_deps
from tasks.core.result_cache import ResultCache, space_of
from tasks.core.shards import Observer, map_ordered, open_executor, shard_rows
from tasks.core.vectors import vector_problem, vectors_to_arrow

PROGRESS_STEPS = 20  # in-process shards per stage input, each a step of its bar
MIN_SHARD_ROWS = 16


def shard_observer(stage: str) -> Observer | None:
    """Under Prefect, each Dask shard's wait as a task run `<stage> shard N`; None outside."""
    if not prefect_loaded():
        return None
    from prefect import task  # noqa: PLC0415
    from prefect.cache_policies import NO_CACHE  # noqa: PLC0415
    from prefect.context import TaskRunContext  # noqa: PLC0415

    if TaskRunContext.get() is None:
        return None

    def observe(n: int, wait: Callable[[], Any]) -> Any:
        def shard(n: int) -> Any:
            return wait()

        return task(shard, name=f"{stage}-shard", task_run_name=f"{stage} shard {n}",
                    cache_policy=NO_CACHE, log_prints=False)(n)

    return observe


class StageTask:
    """A stage's function (`fn`) and, made on first use, its Prefect task (`task`): calling
    it or `with_options` runs the task in a flow. `python -m tasks.<stage>` (DVC's path) and
    `embedpipe stage` call `fn` and never import Prefect (1.1 CPU s a stage process)."""

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self.fn, self.name = frozen_stage(fn), name
        update_wrapper(self, fn)

    @cached_property
    def task(self) -> Any:
        from prefect import task  # noqa: PLC0415
        from prefect.cache_policies import NO_CACHE  # noqa: PLC0415

        return task(self.fn, name=self.name, cache_policy=NO_CACHE)

    def with_options(self, **options: Any) -> Any:
        return self.task.with_options(**options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.task(*args, **kwargs)


def stage_task(name: str) -> Callable[[Callable[..., Any]], StageTask]:
    """`@stage_task("clean")`: the function as the stage's task (`StageTask`)."""
    return lambda fn: StageTask(fn, name)


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
    facts: dict[str, Any] = field(default_factory=dict)
    verified: set[Path] = field(default_factory=set)

    @property
    def seconds(self) -> float:
        """Seconds since the stage started."""
        return time.perf_counter() - self.started

    @property
    def input_fingerprints(self) -> dict[str, str]:
        return {k: m["fingerprint"] for k, m in self.inputs.items()}

    @property
    def vector_cache(self) -> Path | None:
        """The encode stage's shared vector cache (None with `encode.cache` false): the
        stages after it read the texts they embed there first (`search.encode_texts`)."""
        return self.root / self.params.paths.vector_cache if self.params.encode.cache else None

    def fingerprint(self, **facts: Any) -> str:
        """This stage's fingerprint: what the registry declares for it (its params, inputs
        and the `facts` it names), nothing passed beside it."""
        self.facts = facts
        return fingerprint(self.name, self.params, self.input_fingerprints, facts)

    def input_path(self, entry: StageFile) -> Path:
        """Where an upstream stage's file lies, its bytes checked against the sha256 its
        stage's manifest recorded (once a run: `io.check_file`)."""
        path = self.input_dirs[entry.stage] / entry.name
        if path not in self.verified:
            io.check_file(path, self.inputs[entry.stage])
            self.verified.add(path)
        return path

    def read(self, entry: StageFile, columns: list[str] | None = None) -> pa.Table:
        """An upstream table, whole (or only `columns`: the others are never decoded),
        checksum- and stamp-checked."""
        self.input_path(entry)
        return io.read_table(self.input_dirs[entry.stage], entry, self.inputs[entry.stage],
                             columns)

    def read_vectors(self, entry: StageFile, columns: list[str] | None = None
                     ) -> tuple[pa.Table, np.ndarray]:
        """An upstream vector table (only `columns` beside the vectors, when given) and its
        vectors, refused when one is not finite or, where its stage normalised them (its
        manifest's `unit_vectors`), not of length 1."""
        where = f"{self.input_path(entry)} (stage {self.name}'s input)"
        table, x = io.read_with_vectors(self.input_dirs[entry.stage], entry,
                                        self.inputs[entry.stage], VECTOR_COLUMN, columns)
        problem = vector_problem(x, bool(self.inputs[entry.stage].get("unit_vectors", False)))
        if problem:
            raise ValueError(f"{where}: {problem}; rerun the stage that wrote it")
        # last, as the catalog places it; a view of `x`, not a second copy of the vectors
        return table.append_column(VECTOR_COLUMN, vectors_to_arrow(x)), x

    def batches(self, entry: StageFile, columns: list[str] | None = None,
                batch_rows: int | None = None) -> Iterator[pa.Table]:
        """An upstream table batch by batch (`io.iter_batches`), its checksum checked first."""
        self.input_path(entry)
        return io.iter_batches(self.input_dirs[entry.stage], entry, self.inputs[entry.stage],
                               columns, batch_rows)

    def map_shards(self, fn: Callable[..., Any], entry: StageFile, *args: Any,
                   columns: list[str] | None = None, unit: str = "rows") -> Iterator[Any]:
        """`fn(shard, *args)` over an upstream table in shards, results in order, on the
        executor `run.executor` names (`tasks.core.shards`), with the rows done shown as
        the stage's progress."""
        sizes: deque[int] = deque()
        total = self.count(entry)
        rows = shard_rows(self.params.run) or progress_rows(total)

        def shards() -> Iterator[pa.Table]:
            for shard in self.batches(entry, columns, rows):
                sizes.append(shard.num_rows)
                yield shard

        with open_executor(self.params.run) as ex, Progress(self.name, total, unit) as bar:
            observe = shard_observer(self.name) if ex.client is not None else None
            for result in map_ordered(ex, fn, shards(), *args, observe=observe):
                bar.advance(sizes.popleft())
                yield result

    def result_cache(self, part: str = "", **facts: Any) -> ResultCache:
        """This stage's per-document results (`tasks.core.result_cache`; a stage that keeps
        two kinds names each a `part`) in the space of its declared params, `facts`, the
        code it runs and the library versions."""
        return ResultCache(self.root / self.params.paths.result_cache,
                           f"{self.name}/{part}" if part else self.name,
                           self.result_space(**facts))

    def result_space(self, **facts: Any) -> str:
        """The space of this stage's results (`result_cache.space_of`)."""
        decided_by = {"params": declared_params(self.name, self.params), "facts": facts}
        code = {m: TASKS_DIR.parent / m for m in module_deps(self.name)}
        return space_of(self.name, decided_by, code, io.library_versions())

    def map_cached(self, fn: Callable[..., list[Any]], entry: StageFile,
                   keys_of: Callable[[pa.Table], list[str]], cache: ResultCache, *args: Any,
                   columns: list[str] | None = None, unit: str = "rows"
                   ) -> Iterator[tuple[pa.Table, list[Any]]]:
        """(shard, one result per row) over an upstream table in order, as `map_shards`
        shards it: each row's result comes from `cache` by its key (`keys_of(shard)`), and
        only the rows it lacks go to `fn(rows, *args)` on the executor (which returns their
        results, JSON-able, in order); those are added to `cache`."""
        pending: deque[tuple[pa.Table, list[str], list[Any], list[int]]] = deque()
        total = self.count(entry)
        rows = shard_rows(self.params.run) or progress_rows(total)

        def misses() -> Iterator[pa.Table]:
            for shard in self.batches(entry, columns, rows):
                keys = keys_of(shard)
                found = cache.get(keys)
                miss = [i for i, v in enumerate(found) if v is None]
                pending.append((shard, keys, found, miss))
                yield shard.take(pa.array(miss, pa.int64()))

        with open_executor(self.params.run) as ex, Progress(self.name, total, unit) as bar:
            observe = shard_observer(self.name) if ex.client is not None else None
            for computed in map_ordered(ex, fn, misses(), *args, observe=observe):
                shard, keys, found, miss = pending.popleft()
                for i, value in zip(miss, computed, strict=True):
                    found[i] = value
                cache.put([keys[i] for i in miss], computed)
                bar.advance(shard.num_rows)
                yield shard, found

    def count(self, entry: StageFile) -> int:
        """Rows of an upstream table, from its footer."""
        self.input_path(entry)
        return io.count_rows(self.input_dirs[entry.stage], entry, self.inputs[entry.stage])

    def changes(self, entry: StageFile, id_col: str, text_col: str) -> io.ChangeCounter:
        """A counter of rows changed against this stage's previous output of `entry`."""
        return io.ChangeCounter(self.out_dir, entry, id_col, text_col)

    @contextmanager
    def output(self, fingerprint: str | None, config: Any) -> Iterator[io.StageOutput]:
        """The stage's output folder: committed with the manifest (common fields plus what
        was `record`ed) when the block ends, dropped on any exception."""
        with io.StageOutput(self.out_dir, self.name, fingerprint) as out:
            yield out
            out.commit(self.manifest(out.fingerprint, config, **out.facts))
        release_freed_memory()

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
            "decided_by": {"params": declared_params(self.name, self.params),
                           "facts": self.facts},
            "seconds": round(time.perf_counter() - self.started, 3),
            **extra,
        }


def progress_rows(total: int) -> int:
    """Rows per in-process shard: about `PROGRESS_STEPS` shards of the input, so the bar
    moves (with a rate and an ETA) even on a corpus of one reader batch; at least
    `MIN_SHARD_ROWS`, so per-shard overhead stays small, at most `io.BATCH_ROWS`. Outputs
    do not depend on it: writers cut their own row groups."""
    return max(MIN_SHARD_ROWS, min(io.BATCH_ROWS, -(-total // PROGRESS_STEPS)))


def start_stage(name: str, root: str | Path = ".") -> StageRun:
    """Load params, find the stage's folders and read (and cross-check) its inputs."""
    release_freed_memory()  # what earlier stages of this process freed
    root = Path(root).resolve()
    params = load_params(root / "params.yaml")
    spec = get_stage(name)
    input_dirs = {i: get_stage(i).out_dir(params, root) for i in spec.inputs}
    inputs = {i: io.read_manifest(d, i) for i, d in input_dirs.items()}
    io.check_lineage(inputs)
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
