"""Shard files on S3 (`run.dask.scratch`) against a real S3-speaking server on loopback and a
real 2-worker LocalCluster: files round-trip by name, dedup by cell and an on-disk index
give what one process gives, nothing is left behind, and a missing bucket or refused
credentials fail on the driver with the key named."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.core.catalog import VECTOR_COLUMN
from tasks.core.config import DaskConfig, DedupConfig, parse_params
from tasks.core.shards import Executor
from tasks.core.vectors import vectors_to_arrow
from tasks.storage.scratch import SharedScratch, local_copies, open_scratch
from tests.s3_server import AWS_ENV, moto_server
from tests.workspace import scoped_env


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """(endpoint URL, client) of a moto server with the bucket `scratch`."""
    from tasks.storage.s3 import S3Settings, make_client

    logs = tmp_path_factory.mktemp("moto")
    with scoped_env(AWS_ENV), moto_server(logs) as url:
        os.environ["EMBEDPIPE_TEST_MOTO_LOG"] = str(logs / f"moto-{url.rsplit(':', 1)[1]}.log")
        client = make_client(S3Settings(endpoint_url=url))
        client.create_bucket(Bucket="scratch")
        yield url, client


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


def on_s3(url: str) -> DaskConfig:
    return DaskConfig(scratch="s3://scratch/runs", s3_endpoint_url=url)


def left_in(s3_client) -> list[str]:
    return [o["Key"] for o in s3_client.list_objects_v2(Bucket="scratch").get("Contents", [])]


def test_files_round_trip_by_name_and_parquet_reads_by_range(s3, client, tmp_path):
    url, s3_client = s3
    x = np.arange(6000, dtype="float32").reshape(1000, 6)
    path = tmp_path / "v.parquet"
    pq.write_table(pa.table({VECTOR_COLUMN: vectors_to_arrow(x)}), path, row_group_size=300)

    def on_worker(store: SharedScratch, name: str) -> tuple[np.ndarray, np.ndarray]:
        with pq.ParquetFile(store.reader(name)) as pf:
            groups = pf.read_row_groups([1, 3], columns=[VECTOR_COLUMN])
        staged = store.staging("back.npy")
        with open(staged, "wb") as f:
            np.save(f, np.load(store.fetch("made-here.npy")) * 2)
        store.put(staged, "back.npy")
        return np.stack(groups.column(VECTOR_COLUMN).to_numpy(zero_copy_only=False)), np.load(
            store.fetch("back.npy")
        )

    with open_scratch(Executor(client), on_s3(url), tmp_path, "t") as store:
        assert store.on_s3 and store.root.startswith("s3://scratch/runs/t-")
        name = store.share_input(path)
        staged = store.staging("made-here.npy")
        with open(staged, "wb") as f:
            np.save(f, x[:5])
        store.put(staged, "made-here.npy")
        groups, doubled = client.submit(on_worker, store, name).result()
        assert np.array_equal(groups, np.concatenate([x[300:600], x[900:]]))
        assert np.array_equal(doubled, x[:5] * 2)
        store.take("back.npy", tmp_path / "back.npy")
        assert np.array_equal(np.load(tmp_path / "back.npy"), x[:5] * 2)
        assert len(left_in(s3_client)) == 3  # the input, made-here, back (taken: a copy)
        workers_copies = client.run(lambda root: os.listdir(local_copies(root)), store.root)
        assert any(workers_copies.values())
    assert left_in(s3_client) == []  # the prefix is removed after the stage
    assert not any(client.run(lambda root: os.path.exists(local_copies(root)), store.root).values())


def test_dedup_by_cell_through_s3_equals_one_process(s3, client, tmp_path):
    from tasks.duplicates.pairs import near_duplicate_pairs
    from tasks.duplicates.sharded import near_order_scratch, sharded_ivf_pairs
    from tests.test_duplicates import assert_same, planted

    url, s3_client = s3
    x = planted(6000, 24)
    path = tmp_path / "vectors.parquet"
    pq.write_table(pa.table({VECTOR_COLUMN: vectors_to_arrow(x)}), path, row_group_size=700)
    rows = np.random.default_rng(1).permutation(len(x))[:5000]  # some rows gone, reordered
    cfg = DedupConfig(threshold=0.9, exact_search_below=1, nprobe=4)
    executor = Executor(client, 4)
    with open_scratch(executor, on_s3(url), tmp_path, "dedup") as store:
        scratch, xt = near_order_scratch(executor, path, rows, len(x), cfg.seed, store)
        assert scratch.vector_parts == ("rows-000000.npz",)  # rows moved through S3
        assert len(left_in(s3_client)) == 2  # and the vector file, uploaded once
        found = sharded_ivf_pairs(executor, scratch, xt, cfg.nprobe, cfg.threshold, cfg.seed)
    assert_same(near_duplicate_pairs(x[rows], cfg), found)
    assert left_in(s3_client) == [] and sorted(os.listdir(tmp_path)) == ["vectors.parquet"]


@pytest.mark.parametrize("by_path", [True, False])
def test_on_disk_index_through_s3_searches_like_one_index_in_memory(s3, client, tmp_path, by_path):
    from tasks.indexing.ondisk import (
        build_on_disk,
        file_shards,
        put_shards,
        read_index_file,
        write_index_file,
    )
    from tests.test_indexing import search

    url, s3_client = s3
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 16))[rng.integers(0, 20, 6000)] + rng.normal(size=(6000, 16))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype("float32")
    ids = rng.permutation(10**6)[:6000].astype("int64")
    trained = faiss.index_factory(16, "IVF32,Flat", faiss.METRIC_INNER_PRODUCT)
    trained.train(x[::3])
    memory = faiss.clone_index(trained)
    memory.add_with_ids(x, ids)
    path = tmp_path / "v.parquet"
    pq.write_table(pa.table({VECTOR_COLUMN: vectors_to_arrow(x)}), path, row_group_size=500)
    lists = tmp_path / "build" / "index.ivfdata"
    lists.parent.mkdir()
    executor = Executor(client, 4)
    with open_scratch(executor, on_s3(url), tmp_path, "index") as store:
        if by_path:  # row groups of a file uploaded once, read by byte range
            name = store.share_input(path)
            shards = ((name, g, i) for _, g, i in file_shards(path, ids, 1200))
        else:  # vectors in the driver's memory, put shard by shard
            shards = put_shards(store, x, ids, 1300)
        index = build_on_disk(executor, faiss.clone_index(trained), shards, lists, store)
    assert left_in(s3_client) == [] and index.ntotal == len(x)
    write_index_file(index, tmp_path / "build" / "index.faiss")
    shutil.move(tmp_path / "build", tmp_path / "published")
    loaded = read_index_file(tmp_path / "published" / "index.faiss")
    want, got = search(memory, x[:200]), search(loaded, x[:200])
    assert np.array_equal(want[1], got[1]) and np.allclose(want[0], got[0])


def test_text_digests_read_by_path_on_the_workers_equal_one_process(client, tmp_path):
    from tasks.duplicates.pairs import text_digests
    from tasks.duplicates.sharded import digests_by_path

    texts = [f"Chunk {i % 700}  text\n{'x' * (i % 13)}" for i in range(3000)]
    path = tmp_path / "chunks.parquet"
    pq.write_table(pa.table({"text": texts}), path, row_group_size=256)
    got = digests_by_path(Executor(client, 4), path, 1000)
    assert got.dtype == "S32" and np.array_equal(got, text_digests(texts))
    with pytest.raises(ValueError, match="gone.parquet is not visible here"):
        from tasks.duplicates.sharded import file_digests

        file_digests((str(tmp_path / "gone.parquet"), [0]))


def test_a_failed_stage_still_removes_its_scratch_and_keeps_its_error(s3, client, tmp_path):
    url, s3_client = s3
    (tmp_path / "input.bin").write_bytes(b"x" * 1000)
    with (
        pytest.raises(RuntimeError, match="the stage's own error"),
        open_scratch(Executor(client), on_s3(url), tmp_path, "dedup") as store,
    ):
        store.share_input(tmp_path / "input.bin")
        assert left_in(s3_client)
        raise RuntimeError("the stage's own error")
    assert left_in(s3_client) == []


def test_a_missing_bucket_is_named_on_the_driver(s3, client, tmp_path):
    url, _ = s3
    cfg = DaskConfig(scratch="s3://no-such-bucket/x", s3_endpoint_url=url)
    _refused(client, cfg, tmp_path, "dedup",
             r"run\.dask\.scratch: s3://no-such-bucket/x: S3 NoSuchBucket \(HTTP 404\)")
    assert not os.listdir(tmp_path)


def test_refused_credentials_are_named_on_the_driver(client, tmp_path):
    with scoped_env(AWS_ENV), moto_server(tmp_path, enforce_auth=True) as url:
        cfg = DaskConfig(scratch="s3://scratch/x", s3_endpoint_url=url, s3_max_attempts=1)
        _refused(client, cfg, tmp_path, "index",
                 r"run\.dask\.scratch: s3://scratch/x: S3 InvalidAccessKeyId \(HTTP 403\)")


def _refused(client, cfg, tmp_path, stage, match):
    """Opening the scratch `cfg` names for `stage` fails on the driver with `match`."""
    with pytest.raises(ValueError, match=match), open_scratch(Executor(client), cfg, tmp_path,
                                                               stage):
        pass


def test_s3_stage_outputs_and_bad_scratch_values_are_refused_naming_the_key():
    with pytest.raises(ValueError, match=r"paths\.data: .*DVC 3 .*run\.dask\.scratch: s3://"):
        parse_params({"paths": {"data": "s3://bucket/data"}})
    with pytest.raises(
        ValueError,
        match=r"run\.dask\.scratch: .*expected null .* or "
        r"s3://bucket/prefix",
    ):
        parse_params({"run": {"dask": {"scratch": "/mnt/shared"}}})
    assert parse_params({"run": {"dask": {"scratch": "s3://b/p"}}}).run.dask.scratch == "s3://b/p"


@pytest.mark.slow
def test_dedup_and_on_disk_index_stages_through_s3_match_one_process(s3, tmp_path):
    """The dedup (k-means cells) and index (lists on disk) stages on a 2-worker LocalCluster
    with their shard files on S3: the same fingerprints and file bytes as in one process."""
    from tasks.core.params_file import write_overrides
    from tests.test_dask import COMMON, DASK, files
    from tests.workspace import make_workspace, run_stages

    url, s3_client = s3
    settings = {
        **COMMON,
        "dedup.exact_search_below": 2,
        "dedup.nprobe": 2,
        "dedup.threshold": 0.8,
        "index.on_disk": True,
    }
    local = make_workspace(tmp_path / "local")
    write_overrides(
        local / "params.yaml", {**settings, "paths.vector_cache": str(tmp_path / "cache")}
    )
    run_stages(
        local, ("ingest", "clean", "chunk", "finetune", "encode", "reduce", "dedup", "index")
    )
    remote = tmp_path / "s3"
    shutil.copytree(local, remote)
    shutil.rmtree(remote / "data/06_dedup")
    shutil.rmtree(remote / "data/07_index")
    write_overrides(
        remote / "params.yaml",
        {**DASK, "run.dask.scratch": "s3://scratch/ws", "run.dask.s3_endpoint_url": url},
    )
    run_stages(remote, ("dedup", "index"))
    got, want = files(remote), files(local)
    assert got["dedup"] == want["dedup"] and got["index"] == want["index"]
    assert "index.ivfdata" in got["index"] and left_in(s3_client) == []
    log = Path(os.environ["EMBEDPIPE_TEST_MOTO_LOG"]).read_text()
    for put in (
        "/scratch/ws/dedup-",
        "/rows-000000.npz",
        "/scratch/ws/index-",
        "/shard-000000.index",
        "/merged.ivfdata",
    ):
        assert put in log  # the shard files went through S3
    assert not list((remote / "data").glob(".*scratch*"))
