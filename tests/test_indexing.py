"""An IVF index filled in shards and merged on disk (real FAISS, real Parquet files): the
same search results as one in-memory index, a folder that can move, read memory-mapped."""

from __future__ import annotations

import shutil

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.core.catalog import INDEX_IVFDATA, VECTOR_COLUMN
from tasks.core.config import DaskConfig
from tasks.core.shards import Executor
from tasks.core.vectors import vectors_to_arrow
from tasks.indexing.ondisk import (
    array_shards,
    build_on_disk,
    file_shards,
    index_bytes,
    lists_file,
    read_index_file,
    read_rows,
    wants_on_disk,
    write_index_file,
)
from tasks.storage.scratch import SharedScratch, open_scratch


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 16))[rng.integers(0, 20, 6000)] + rng.normal(size=(6000, 16))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype("float32")
    path = tmp_path_factory.mktemp("vec") / "vectors.parquet"
    pq.write_table(pa.table({VECTOR_COLUMN: vectors_to_arrow(x)}), path, row_group_size=500)
    ids = rng.permutation(10**6)[:6000].astype("int64")
    trained = faiss.index_factory(16, "IVF32,Flat", faiss.METRIC_INNER_PRODUCT)
    trained.train(read_rows(path, np.arange(0, 6000, 3)))
    return path, x, ids, trained


def search(index: faiss.Index, xq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    faiss.extract_index_ivf(index).nprobe = 4
    return index.search(xq, 10)


def test_read_rows_takes_sampled_rows_across_row_groups(data):
    path, x, _, _ = data
    rows = np.array([0, 499, 500, 2999, 5999])
    assert np.array_equal(read_rows(path, rows), x[rows])


@pytest.mark.parametrize("by_path", [True, False])
def test_merged_on_disk_searches_like_one_index_in_memory(data, tmp_path, by_path):
    path, x, ids, trained = data
    memory = faiss.clone_index(trained)
    memory.add_with_ids(x, ids)
    shards = file_shards(path, ids, 1200) if by_path else array_shards(x, ids, 1300)
    lists = tmp_path / "build.ivfdata"
    with open_scratch(Executor(), DaskConfig(), tmp_path, "index") as store:
        index = build_on_disk(Executor(), faiss.clone_index(trained), shards, lists, store)
    assert index.ntotal == len(x) and lists_file(index) == lists
    assert [p.name for p in tmp_path.iterdir()] == [lists.name]  # shard files are gone
    folder = tmp_path / "built"
    folder.mkdir()
    write_index_file(index, folder / "index.faiss")
    moved = tmp_path / "published"
    assert lists_file(index) == folder / INDEX_IVFDATA.name and not lists.exists()
    assert np.array_equal(search(index, x[:20])[1], search(memory, x[:20])[1])
    shutil.move(folder, moved)  # what publish does: the lists are found beside the index
    loaded = read_index_file(moved / "index.faiss")
    assert isinstance(
        faiss.downcast_InvertedLists(faiss.extract_index_ivf(loaded).invlists),
        faiss.OnDiskInvertedLists,
    )
    want, got = search(memory, x[:200]), search(loaded, x[:200])
    assert np.array_equal(want[1], got[1]) and np.allclose(want[0], got[0])


def test_on_disk_auto_follows_the_memory_budget(data):
    *_, trained = data
    size = index_bytes(trained, 10**6)
    assert size == 10**6 * (16 * 4 + 8) + 32 * 16 * 4
    assert wants_on_disk("auto", trained, 10**6, size / 2**20 * 0.9)
    assert not wants_on_disk("auto", trained, 10**6, size / 2**20 * 1.1)
    assert wants_on_disk(True, trained, 10, 1e6) and not wants_on_disk(False, trained, 10**9, 1)
    assert not wants_on_disk(True, faiss.IndexFlatIP(16), 10, 1.0)  # only IVF lists move


def test_a_plain_index_file_reads_as_before(tmp_path):
    index = faiss.IndexFlatIP(4)
    index.add(np.eye(4, dtype="float32"))
    write_index_file(index, tmp_path / "index.faiss")
    assert read_index_file(tmp_path / "index.faiss").ntotal == 4
    assert not (tmp_path / INDEX_IVFDATA.name).exists()


def test_shard_files_the_workers_cannot_see_are_named(tmp_path):
    from tasks.indexing.ondisk import fill_shard

    with pytest.raises(ValueError, match="nowhere.index.*storage the workers share"):
        fill_shard(
            (0, (np.zeros((1, 4), "float32"), np.zeros(1, "int64"))),
            "nowhere.index",
            SharedScratch(str(tmp_path)),
        )


@pytest.mark.slow
def test_index_stage_on_disk_locally_and_on_dask_searches_like_in_memory(tmp_path):
    """The index stage with `index.on_disk: true`: lists filled in shards (in this process
    and on a 2-worker LocalCluster, the same bytes), merged on disk, and the folder searched
    memory-mapped with the same hits as the in-memory index."""
    import json

    from tasks.core.params_file import write_overrides
    from tasks.query.search import load_index_folder
    from tests.conftest import make_workspace, run_stages

    base = make_workspace(tmp_path / "base")
    write_overrides(
        base / "params.yaml",
        {
            "encode.device": "cpu",
            "index.nprobe": 4,
            "index.factory": "IVF{nlist},Flat",
            "paths.vector_cache": str(tmp_path / "cache"),
        },
    )
    run_stages(base, ("ingest", "clean", "chunk", "finetune", "encode", "reduce", "dedup"))
    runs = {
        "memory": {"index.on_disk": False},
        "disk": {"index.on_disk": True},
        "dask": {
            "index.on_disk": True,
            "run.executor": "dask",
            "run.dask.workers": 2,
            "run.dask.shard_rows": 64,
        },
    }
    folders = {}
    for name, overrides in runs.items():
        shutil.copytree(base, tmp_path / name, ignore=shutil.ignore_patterns("cache"))
        write_overrides(tmp_path / name / "params.yaml", overrides)
        run_stages(tmp_path / name, ("index",))
        folders[name] = tmp_path / name / "data/07_index"
        assert not list(folders[name].parent.glob(".07_index.*"))  # no lists left behind
    files = {n: json.loads((f / "_manifest.json").read_text())["files"] for n, f in folders.items()}
    assert "index.ivfdata" in files["disk"] and "index.ivfdata" not in files["memory"]
    assert {k: v for k, v in files["dask"].items() if k not in {"card.json", "metadata.json"}} == {
        k: v for k, v in files["disk"].items() if k not in {"card.json", "metadata.json"}
    }
    memory, disk = load_index_folder(folders["memory"]), load_index_folder(folders["disk"])
    assert isinstance(
        faiss.downcast_InvertedLists(faiss.extract_index_ivf(disk.index).invlists),
        faiss.OnDiskInvertedLists,
    )
    queries = ["how to install", "configuration file", "error message when starting"]
    assert disk.search_text(queries, 5, mode="dense") == memory.search_text(
        queries, 5, mode="dense"
    )
    assert json.loads((folders["disk"] / "card.json").read_text())["on_disk"] is True
