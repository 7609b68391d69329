"""Shards of a stage's input mapped over one executor: this process, or a Dask cluster.

`open_executor` gives the executor `run.executor` names: `local`, or `dask` through a
`distributed.Client` to `run.dask.address`, to the cluster the Prefect flow started for the run
(`EMBEDPIPE_DASK_ADDRESS`), or else to a LocalCluster of its own. `map_ordered` sends shards out
with at most `max_in_flight` outstanding and yields results in input order, so the driver's
memory stays flat and outputs are written exactly as in one process. Shard data of clean,
chunk and encode travels through Dask (pickled Arrow tables): those need no shared
filesystem. Dedup (`tasks.duplicates.sharded`) and an on-disk index (`tasks.indexing.ondisk`)
have their workers read and write files by path under `paths.data`: that storage is shared.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from tasks.core.config import RunConfig

ADDRESS_ENV = "EMBEDPIPE_DASK_ADDRESS"  # the cluster a flow run started for its stages
log = logging.getLogger(__name__)


@dataclass
class Executor:
    """Where shards run: `client` is None for this process."""

    client: Any = None
    in_flight: int = 1
    retries: int = 0
    shard_rows: int = 2048


def connect(address: str, timeout_s: float) -> Any:
    """A Client of the scheduler at `address`; RuntimeError naming it when it does not answer
    within `timeout_s`."""
    from distributed import Client  # noqa: PLC0415

    logging.getLogger("distributed").setLevel(logging.WARNING)  # per-connection chatter
    try:
        return Client(address, timeout=f"{timeout_s}s", set_as_default=False)
    except (OSError, TimeoutError) as err:
        raise RuntimeError(f"run.dask.address: no Dask scheduler answers at {address} within "
                           f"{timeout_s:g} s ({type(err).__name__}); nothing was written"
                           ) from None


@contextmanager
def local_cluster(cfg: RunConfig) -> Iterator[str]:
    """A LocalCluster of `run.dask.workers` processes for the block; yields its address."""
    from distributed import LocalCluster  # noqa: PLC0415

    with LocalCluster(n_workers=cfg.dask.workers, threads_per_worker=cfg.dask.threads_per_worker,
                      processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster:
        yield cluster.scheduler_address


@contextmanager
def open_executor(cfg: RunConfig) -> Iterator[Executor]:
    """The executor `cfg.executor` names, for the block (a cluster it started is stopped)."""
    if cfg.executor == "local":
        yield Executor()
        return
    address = cfg.dask.address or os.environ.get(ADDRESS_ENV)
    with local_cluster(cfg) if address is None else nullcontext(address) as addr:
        client = connect(addr, cfg.dask.connect_timeout_s)
        try:
            threads = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())
            yield Executor(client, cfg.dask.max_in_flight or max(2, 2 * threads),
                           cfg.dask.retries, cfg.dask.shard_rows)
        finally:
            client.close()


@contextmanager
def run_cluster(cfg: RunConfig) -> Iterator[None]:
    """For a run of several stages (the Prefect flow): one LocalCluster their executors share
    (through `EMBEDPIPE_DASK_ADDRESS`), started here and stopped at the end of the run. Nothing
    when the executor is local or a scheduler address is given."""
    if cfg.executor != "dask" or cfg.dask.address or os.environ.get(ADDRESS_ENV):
        yield
        return
    with local_cluster(cfg) as address:
        os.environ[ADDRESS_ENV] = address
        try:
            yield
        finally:
            os.environ.pop(ADDRESS_ENV, None)


def shard_rows(cfg: RunConfig) -> int | None:
    """Rows per shard: `run.dask.shard_rows` on Dask; None (the reader's own batch,
    `io.BATCH_ROWS`) in this process."""
    return cfg.dask.shard_rows if cfg.executor == "dask" else None


Observer = Callable[[int, Callable[[], Any]], Any]


def map_ordered(executor: Executor, fn: Callable[..., Any], items: Iterable[Any],
                *args: Any, observe: Observer | None = None) -> Iterator[Any]:
    """`fn(item, *args)` for every item, in input order.

    On Dask at most `executor.in_flight` shards are outstanding: the next is read only when
    the oldest is back. A shard that fails is retried (`retries`); one that still fails, or a
    cluster that goes away, raises RuntimeError and the stage's output is dropped.
    `observe(n, wait)` runs the wait for shard n (under Prefect: as a task run of its own).
    """
    if executor.client is None:
        for item in items:
            yield fn(item, *args)
        return
    pending: deque[tuple[int, Any]] = deque()
    run = f"{getattr(fn, '__name__', 'shard')}-{uuid.uuid4().hex[:12]}"  # keys never collide
    for n, item in enumerate(items):
        pending.append((n, executor.client.submit(
            fn, item, *args, pure=False, retries=executor.retries, key=f"{run}-{n}")))
        if len(pending) >= executor.in_flight:
            yield _wait(*pending.popleft(), observe)
    while pending:
        yield _wait(*pending.popleft(), observe)


def _wait(n: int, future: Any, observe: Observer | None) -> Any:
    return _result(future) if observe is None else observe(n, lambda: _result(future))


def _result(future: Any) -> Any:
    try:
        return future.result()
    except Exception as err:  # distributed raises many classes (KilledWorker, CommClosed...)
        if isinstance(err, ValueError | TypeError):
            raise  # the stage's own error, from the shard's pure function
        raise RuntimeError(f"dask: shard {future.key} failed ({type(err).__name__}: {err}); "
                           "the stage's previous output is unchanged") from err


def row_group_spans(path: Path | str, min_rows: int) -> Iterator[tuple[list[int], int, int]]:
    """Whole row groups of a Parquet file in runs of at least `min_rows` rows (the last run
    may hold fewer): (row group numbers, first row, row count), for workers that read their
    shard of the file by path."""
    with pq.ParquetFile(path) as pf:
        sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
    groups: list[int] = []
    first = count = 0
    for g, size in enumerate(sizes):
        groups.append(g)
        count += size
        if count >= min_rows or g == len(sizes) - 1:
            yield groups, first, count
            groups, first, count = [], first + count, 0
