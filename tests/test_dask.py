"""The heavy stages on a real dask.distributed LocalCluster (2 process workers): the same
fingerprints and bytes as one process, a worker killed mid-encode, an unreachable scheduler,
a cluster lost mid-run, `dvc repro` and the Prefect flow under the dask executor."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.workspace import REPO, env_with_venv, free_port, make_workspace, run_stages

BUILD = ("ingest", "clean", "chunk", "finetune", "encode", "reduce", "dedup", "index")
# IVF with a fixed nprobe: the index's adds are sharded too, and nothing depends on timing.
COMMON = {"index.factory": "IVF{nlist},Flat", "index.nprobe": 4, "encode.device": "cpu"}
DASK = {"run.executor": "dask", "run.dask.workers": 2, "run.dask.shard_rows": 40}
TIMED = {"card.json", "metadata.json"}  # build timings and dates, not data


def workspace(dest: Path, overrides: dict) -> Path:
    from tasks.core.params_file import write_overrides

    ws = make_workspace(dest)
    write_overrides(ws / "params.yaml", {**COMMON, "paths.vector_cache": str(ws / "cache"),
                                         **overrides})
    return ws


def files(ws: Path) -> dict[str, dict[str, str]]:
    """Stage -> its fingerprint and the sha256 of each data file."""
    out = {}
    for path in sorted((ws / "data").glob("[0-9][0-9]_*/_manifest.json")):
        m = json.loads(path.read_text())
        out[m["stage"]] = {"fingerprint": m["fingerprint"],
                           **{f: h for f, h in m["files"].items() if f not in TIMED}}
    return out


@pytest.fixture(scope="module")
def local_ws(tmp_path_factory):
    ws = workspace(tmp_path_factory.mktemp("local") / "ws", {})
    run_stages(ws, BUILD)
    return ws


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as c, Client(c) as client:
        yield c, client


def test_sharded_stages_match_one_process_byte_for_byte(local_ws, cluster, tmp_path):
    """On the module's cluster (a scheduler's address, as a user's cluster is given); the
    LocalCluster a stage or a flow run starts for itself is what the `dvc repro` and Prefect
    tests below run on."""
    ws = workspace(tmp_path / "ws", {**DASK, "run.dask.address": cluster[0].scheduler_address})
    run_stages(ws, BUILD)
    assert files(ws) == files(local_ws)
    assert json.loads((ws / "data/04_encode/_manifest.json").read_text())["executor"] == "dask"


def test_dedup_by_cell_on_dask_matches_one_process_byte_for_byte(local_ws, cluster, tmp_path):
    """The k-means cell path (not the exact one of small corpora): sharded by cell on the
    workers, the same kept rows, audit bytes and fingerprint as in one process."""
    from tasks.core.params_file import write_overrides

    cells = {"dedup.exact_search_below": 2, "dedup.nprobe": 2, "dedup.threshold": 0.8}
    out = {}
    on_cluster = {**DASK, "run.dask.address": cluster[0].scheduler_address}
    for name, extra in (("local", {}), ("dask", on_cluster)):
        ws = tmp_path / name
        shutil.copytree(local_ws, ws, ignore=shutil.ignore_patterns("cache"))
        write_overrides(ws / "params.yaml", {**cells, **extra})
        run_stages(ws, ("dedup",))
        out[name] = files(ws)["dedup"]
        assert not list((ws / "data").glob(".dedup-scratch-*"))
    rows = json.loads((ws / "data/06_dedup/_manifest.json").read_text())["rows"]
    assert rows["near"] > 10 and out["dask"] == out["local"]


def test_worker_killed_during_encode_is_retried_output_identical(local_ws, cluster, tmp_path):
    c, client = cluster
    ws = workspace(tmp_path / "ws", {**DASK, "run.dask.address": c.scheduler_address,
                                     "run.dask.shard_rows": 20})
    run_stages(ws, ("ingest", "clean", "chunk", "finetune"))
    before = client.run(os.getpid)
    killed: list[int] = []

    def kill_one_worker() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any((ws / "data").glob(".04_encode.tmp-*")):
            time.sleep(0.02)
        time.sleep(0.5)  # shards are out on both workers
        pid = next(iter(before.values()))
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    run_stages(ws, ("encode",))
    killer.join()
    assert killed and killed[0] not in client.run(os.getpid).values()
    assert files(ws)["encode"] == files(local_ws)["encode"]


def test_unreachable_scheduler_is_named_quickly_and_nothing_written(local_ws, tmp_path):
    from flows.pipeline import STAGE_TASKS

    ws = tmp_path / "ws"
    shutil.copytree(local_ws, ws, ignore=shutil.ignore_patterns("cache"))
    address = f"tcp://127.0.0.1:{free_port()}"
    from tasks.core.params_file import write_overrides

    write_overrides(ws / "params.yaml", {"run.executor": "dask", "run.dask.address": address,
                                         "run.dask.connect_timeout_s": 2})
    before = (ws / "data/02_clean/_manifest.json").read_text()
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=f"no Dask scheduler answers at {address}"):
        STAGE_TASKS["clean"].fn(root=str(ws))
    assert time.monotonic() - started < 30
    assert (ws / "data/02_clean/_manifest.json").read_text() == before
    assert not list((ws / "data").glob(".02_clean.*"))


def test_cluster_lost_mid_run_fails_the_stage_and_keeps_the_output(local_ws, tmp_path):
    from distributed import LocalCluster

    from flows.pipeline import STAGE_TASKS
    from tasks.core.params_file import write_overrides

    ws = tmp_path / "ws"
    shutil.copytree(local_ws, ws, ignore=shutil.ignore_patterns("cache"))
    before = (ws / "data/04_encode/_manifest.json").read_text()
    lost = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                        dashboard_address=None)
    write_overrides(ws / "params.yaml", {**DASK, "run.dask.address": lost.scheduler_address,
                                         "run.dask.shard_rows": 10,
                                         "paths.vector_cache": str(tmp_path / "empty")})

    def lose_cluster() -> None:
        while not any((ws / "data").glob(".04_encode.tmp-*")):
            time.sleep(0.02)
        time.sleep(0.5)
        lost.close()

    threading.Thread(target=lose_cluster, daemon=True).start()
    with pytest.raises(RuntimeError, match="dask"):
        STAGE_TASKS["encode"].fn(root=str(ws))
    assert (ws / "data/04_encode/_manifest.json").read_text() == before
    assert not list((ws / "data").glob(".04_encode.*"))


def test_dvc_repro_under_the_dask_executor(local_ws, tmp_path):
    ws = workspace(tmp_path / "ws", DASK)
    proc = subprocess.run(["dvc", "repro", *BUILD], cwd=ws, env=env_with_venv(),
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert files(ws) == files(local_ws)


def test_prefect_flow_under_the_dask_executor_shows_shards(local_ws, prefect_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    from flows.pipeline import pipeline

    ws = workspace(tmp_path / "ws", DASK)
    summary = pipeline(root=str(ws))
    assert [s["stage"] for s in summary["stages"] if s["ran"]][:len(BUILD)] == list(BUILD)
    assert {k: v for k, v in files(ws).items() if k in BUILD} == files(local_ws)
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(
            name=TaskRunFilterName(like_="encode shard")))
    assert len(runs) >= 2


def test_driver_refuses_the_local_cluster_of_a_dead_flow(tmp_path):
    """A stale EMBEDPIPE_DASK_ADDRESS (a flow's cluster that is gone) is refused by name."""
    from tasks.core.config import RunConfig
    from tasks.core.shards import ADDRESS_ENV, open_executor

    address = f"tcp://127.0.0.1:{free_port()}"
    os.environ[ADDRESS_ENV] = address
    try:
        cfg = RunConfig(executor="dask", dask={"connect_timeout_s": 1})
        with pytest.raises(RuntimeError, match=address), open_executor(cfg):
            pass
    finally:
        os.environ.pop(ADDRESS_ENV)
    assert REPO.is_dir()
