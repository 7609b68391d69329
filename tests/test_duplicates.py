"""Near-duplicate search by k-means cell: the sharded search (in this process and on a real
2-worker LocalCluster, reading a real Parquet vector file) finds exactly the pairs and
float32 similarities of the one-process search, and the priority order is Python's."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.core.catalog import VECTOR_COLUMN
from tasks.core.config import DaskConfig, DedupConfig
from tasks.core.shards import Executor
from tasks.core.vectors import vectors_to_arrow
from tasks.dedup import keep_order
from tasks.duplicates.pairs import first_of_keys, near_duplicate_pairs, text_digests
from tasks.duplicates.sharded import near_order_scratch, sharded_ivf_pairs
from tasks.storage.scratch import SharedScratch, open_scratch


def planted(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Unit vectors in a few clusters, 3% of them perturbed copies of earlier rows."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(8, d))[rng.integers(0, 8, n)] + rng.normal(size=(n, d)) * 0.7
    dup = rng.choice(np.arange(n // 2, n), size=n * 3 // 100, replace=False)
    x[dup] = x[dup - n // 2] + rng.normal(size=(len(dup), d)) * 0.02
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype("float32")


@pytest.fixture(scope="module")
def vector_file(tmp_path_factory):
    x = planted(6000, 24)
    path = tmp_path_factory.mktemp("vec") / "vectors.parquet"
    pq.write_table(pa.table({VECTOR_COLUMN: vectors_to_arrow(x)}), path, row_group_size=700)
    return path, x


def sharded(
    executor: Executor,
    path,
    rows: np.ndarray,
    n: int,
    cfg: DedupConfig,
    where,
    dask: DaskConfig | None = None,
):
    with open_scratch(executor, dask or DaskConfig(), where, "dedup") as store:
        scratch, xt = near_order_scratch(executor, path, rows, n, cfg.seed, store)
        return sharded_ivf_pairs(executor, scratch, xt, cfg.nprobe, cfg.threshold, cfg.seed)


def assert_same(a, b) -> None:
    assert len(a[0]) > 100  # the planted copies, at least
    for u, v in zip(a, b, strict=True):
        assert u.dtype == v.dtype and np.array_equal(u, v)


def test_sharded_in_process_equals_one_process_on_a_subset_in_priority_order(vector_file, tmp_path):
    path, x = vector_file
    rows = np.random.default_rng(1).permutation(len(x))[:5000]  # some rows gone, reordered
    cfg = DedupConfig(threshold=0.9, exact_search_below=1, nprobe=3)
    assert_same(
        near_duplicate_pairs(x[rows], cfg), sharded(Executor(), path, rows, len(x), cfg, tmp_path)
    )
    assert not list(tmp_path.iterdir())  # the scratch is gone


def test_sharded_on_a_local_cluster_equals_one_process(vector_file, tmp_path):
    from distributed import Client, LocalCluster

    path, x = vector_file
    cfg = DedupConfig(threshold=0.9, exact_search_below=1, nprobe=4)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        found = sharded(Executor(client, 4), path, np.arange(len(x)), len(x), cfg, tmp_path)
    assert_same(near_duplicate_pairs(x, cfg), found)


def test_scratch_the_workers_cannot_see_is_named(vector_file, tmp_path):
    from tasks.duplicates.sharded import Scratch, pairs_in_span

    gone = Scratch(SharedScratch(str(tmp_path / "nowhere")), 2, 4)
    with pytest.raises(ValueError, match="nowhere/vectors.npy.*storage the workers share"):
        pairs_in_span((0, 1), gone, 0.9)


def test_keep_order_is_pythons_order_of_length_then_code_points():
    sources = ["b.md", "a.md", "é.md", "z.md", "a-copy.md", "😀.md", "a.md", "Z.md", "ab.md"]
    want = sorted(range(len(sources)), key=lambda r: (len(sources[r]), sources[r], r))
    assert keep_order(sources).tolist() == want
    assert keep_order(pa.chunked_array([sources[:4], sources[4:]])).tolist() == want


def test_exact_keys_first_of_each_normalised_text():
    keys = text_digests(["Hello  World", "other", "hello world", "OTHER\n", "Ｈｅｌｌｏ world"])
    assert keys.dtype == np.dtype("S32") and first_of_keys(keys).tolist() == [0, 1, 0, 1, 0]
    assert first_of_keys(text_digests([])).tolist() == []


def test_exact_similarity_in_blocks_gives_the_same_float64_values(monkeypatch):
    """Candidate pairs are scored a block at a time: bit for bit the one-shot values."""
    from tasks.duplicates import cells  # noqa: PLC0415

    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 16)).astype("float32")
    i, j = rng.integers(0, 300, 1001), rng.integers(0, 300, 1001)
    whole = np.einsum("ij,ij->i", x[i].astype("float64"), x[j].astype("float64"))
    monkeypatch.setattr(cells, "BLOCK_ELEMS", 4 * 16 * 7)  # 7 pairs a block
    got = cells.exact_similarity(x, i, j)
    assert got.dtype == np.float64 and got.tobytes() == whole.tobytes()
    assert cells.exact_similarity(x, i[:0], j[:0]).shape == (0,)
