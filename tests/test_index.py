from __future__ import annotations

import faiss
import numpy as np
import pytest

from tasks.core.config import IndexConfig
from tasks.index import (
    auto_nlist,
    build_index,
    fill_index,
    resolve_factory,
    train_index,
    tune_search_param,
)
from tasks.query.recall import recall_at_k


def clustered(n: int, d: int = 32, k: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    x = centres[rng.integers(0, k, n)] + rng.normal(size=(n, d)) * 0.6
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype="float32")


def test_auto_picks_flat_when_small_and_ivf_when_large():
    cfg = IndexConfig()
    assert resolve_factory(cfg, 500, exact_ms=0.2) == ("Flat", None)
    factory, nlist = resolve_factory(cfg, 1_000_000, exact_ms=60.0)
    assert factory == f"IVF{nlist},Flat" and 4 * 1000 <= nlist <= 16 * 1000
    assert auto_nlist(1000) == 25  # capped so each list has >= 39 training points


def test_ivf_recall_at_chosen_nprobe_on_held_out_queries():
    both = clustered(20_300)
    x, xq = both[:20_000], both[20_000:]  # same distribution, queries not in the index
    cfg = IndexConfig(factory="IVF{nlist},Flat", target_recall=0.95)
    factory, nlist = resolve_factory(cfg, len(x))
    index = build_index(x, factory, cfg)
    name, nprobe, sweep = tune_search_param(index, x, nlist, cfg)
    assert name == "nprobe" and nprobe < nlist and sweep[-1]["recall_corpus"] >= 0.95
    exact = faiss.IndexFlatIP(x.shape[1])
    exact.add(x)
    _, gt = exact.search(xq, 10)
    _, found = index.search(xq, 10)
    assert recall_at_k(found, gt) >= 0.95


@pytest.mark.parametrize("factory", ["HNSW32", "IVF{nlist},PQ8", "Flat"])
def test_other_factories_build_and_search(factory):
    x = clustered(5000, seed=2)
    cfg = IndexConfig(factory=factory, target_recall=0.8)
    concrete, nlist = resolve_factory(cfg, len(x))
    index = build_index(x, concrete, cfg)
    _, _, sweep = tune_search_param(index, x, nlist, cfg)
    assert index.ntotal == len(x)
    assert not sweep or sweep[-1]["recall_corpus"] >= 0.5


def test_nlist_above_vector_count_fails():
    with pytest.raises(ValueError, match=r"index\.nlist: 4096 lists for 1000 vectors"):
        resolve_factory(IndexConfig(factory="IVF{nlist},Flat", nlist=4096), 1000)


def test_bad_factory_string_named():
    with pytest.raises(ValueError, match=r"index\.factory: FAISS cannot build 'Nope12'"):
        build_index(clustered(100), "Nope12", IndexConfig())


def test_train_then_fill_is_build_with_ids():
    x = clustered(4000, seed=4)
    ids = np.random.default_rng(4).choice(2**60, size=len(x), replace=False).astype("int64")
    cfg = IndexConfig(factory="IVF{nlist},Flat", train_sample=1000)
    factory, _ = resolve_factory(cfg, len(x))
    empty = train_index(x, factory, cfg)
    assert empty.is_trained and empty.ntotal == 0
    index = fill_index(empty, x, ids)
    again = build_index(x, factory, cfg, ids)
    faiss.extract_index_ivf(index).nprobe = faiss.extract_index_ivf(again).nprobe = 8
    assert index.ntotal == again.ntotal == len(x)
    assert (index.search(x[:50], 5)[1] == again.search(x[:50], 5)[1]).all()
    assert np.isin(index.search(x[:50], 5)[1], ids).all()
