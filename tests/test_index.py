from __future__ import annotations

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.core.catalog import VECTOR_COLUMN
from tasks.core.config import IndexConfig
from tasks.core.vectors import vectors_to_arrow
from tasks.indexing.build import build_index, fill_index, train_index
from tasks.indexing.factory import auto_factory, auto_nlist, resolve_factory
from tasks.indexing.recall import RecallProbe, recall_at_k, set_search_param
from tasks.indexing.tuning import tune_search_param
from tasks.indexing.updates import EXACT_REBUILT, apply_plan, index_rows, plan_update


def clustered(n: int, d: int = 32, k: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    x = centres[rng.integers(0, k, n)] + rng.normal(size=(n, d)) * 0.6
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype="float32")


def test_auto_picks_flat_when_small_and_ivf_when_large():
    cfg = IndexConfig()
    assert resolve_factory(cfg, 500, 384) == ("Flat", None)
    assert resolve_factory(cfg, 15_000, 384) == ("Flat", None)  # ~2.9 ms by the cost model
    factory, nlist = resolve_factory(cfg, 1_000_000, 384)
    assert factory == f"IVF{nlist},Flat" and 4 * 1000 <= nlist <= 16 * 1000
    assert auto_nlist(1000) == 25  # capped so each list has >= 39 training points


def test_auto_rule_is_a_function_of_n_d_and_params_only():
    factory, why = auto_factory(IndexConfig(max_query_ms=1.0), 15_000, 384)
    assert factory == "IVF{nlist},Flat" and "over index.max_query_ms=1.0" in why
    # memory: 100k x 384 float32 is 146 MB; 20 MB leaves 209 bytes a vector -> 192 codes
    factory, why = auto_factory(IndexConfig(max_memory_mb=20), 100_000, 384)
    assert factory == "IVF{nlist},PQ192" and "index.max_memory_mb=20" in why
    with pytest.raises(ValueError, match="index.max_memory_mb"):
        auto_factory(IndexConfig(max_memory_mb=0.01), 100_000, 384)
    with pytest.raises(ValueError, match="needs the vectors' dimension"):
        resolve_factory(IndexConfig(), 100)


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


def _rows(x: np.ndarray, n_ids: int) -> pa.Table:
    ids = [f"doc:{i:04d}" for i in range(n_ids)]
    return pa.table({"chunk_id": ids, "text": [f"text {i}" for i in range(n_ids)],
                     VECTOR_COLUMN: vectors_to_arrow(x)})


@pytest.mark.parametrize("factory", ["auto", "IVF{nlist},Flat"])
def test_update_with_a_changed_vector_gives_what_a_rebuild_gives(factory):
    """Row 4 of issue 29: the same ids and texts with one vector changed (a repaired cache)
    must reach the index; an update used to compare texts only and keep the old vector."""
    cfg = IndexConfig(factory=factory, nprobe=8 if factory != "auto" else "auto")
    x0 = clustered(3000, seed=7)
    x1 = x0.copy()
    x1[[5, 77, 1500]] = clustered(3, seed=8)  # same ids, same texts, other vectors
    before, after = index_rows(_rows(x0, 3000)), index_rows(_rows(x1, 3000))
    built = apply_plan(plan_update(None, {}, before[1], before[2], "s", cfg), None, None,
                       before[0], before[1], cfg)
    prev = {"space": "s", "config": cfg.model_dump(mode="json"),
            "card": built.card_facts(plan_update(None, {}, before[1], before[2], "s", cfg), x0)
            | {"factory": built.factory, "nlist": built.nlist}}
    plan = plan_update(prev, dict(zip(before[1].tolist(), before[2], strict=True)), after[1],
                       after[2], "s", cfg)
    if built.factory == "Flat":  # an exact index is rebuilt: what a full build gives
        assert plan.mode == "rebuild" and plan.reason == EXACT_REBUILT
    else:
        assert plan.mode == "incremental" and sorted(plan.add_rows.tolist()) == [5, 77, 1500]
    updated = apply_plan(plan, prev, built.index, after[0], after[1], cfg)
    # a rebuild over the same vectors: the same trained cells for IVF (the update keeps its
    # quantizer until retrain_growth), a fresh exact index for Flat
    trained = faiss.clone_index(faiss.downcast_index(built.index)) if built.nlist else None
    if trained is not None:
        trained.reset()
        rebuilt = fill_index(trained, after[0], after[1])
    else:
        rebuilt = build_index(after[0], built.factory, cfg, after[1])
    for index in (updated.index, rebuilt):
        set_search_param(index, "nprobe" if built.nlist else None, 8)
    xq = x1[[5, 77, 1500, 10, 20]]
    s_up, i_up = updated.index.search(xq, 10)
    s_re, i_re = rebuilt.search(xq, 10)
    np.testing.assert_array_equal(i_up, i_re)
    np.testing.assert_allclose(s_up, s_re, rtol=1e-6)
    assert i_up[0, 0] == after[1][5]  # the changed vector is found as itself


def test_an_on_disk_previous_index_is_rebuilt_and_the_card_says_why(tmp_path):
    """An index whose lists are on disk is rebuilt, never updated: the plan (and so the
    card's `update_reason`) says so instead of "no previous index"."""
    import json

    from tasks.core.fingerprint import sha256_file
    from tasks.indexing.previous import ON_DISK_REBUILT, update_or_build

    x = clustered(300, d=16)
    rows = index_rows(pa.table({"chunk_id": [f"c{i}" for i in range(300)],
                                VECTOR_COLUMN: vectors_to_arrow(x)}), x)
    cfg = IndexConfig(factory="Flat")
    _, plan = update_or_build(tmp_path / "none", rows, "s", cfg, fill_index)
    assert plan.reason == "no previous index"
    prev = tmp_path / "07_index"
    prev.mkdir()
    faiss.write_index(faiss.IndexFlatIP(16), str(prev / "index.faiss"))
    pq.write_table(pa.table({"int_id": [1], "vector_sha256": ["a"]}),
                           prev / "chunks.parquet")
    (prev / "index.ivfdata").write_bytes(b"lists")
    (prev / "_manifest.json").write_text(json.dumps({"stage": "index", "files": {
        n: sha256_file(prev / n) for n in ("index.faiss", "chunks.parquet")}}))
    built, plan = update_or_build(prev, rows, "s", cfg, fill_index)
    assert (plan.mode, plan.reason) == ("rebuild", ON_DISK_REBUILT)
    assert built.card_facts(plan, x[:2])["update_reason"] == ON_DISK_REBUILT


def test_recall_probe_truth_is_what_a_flat_index_answers():
    """The probe's exact answers come from FAISS's brute-force kNN over the vectors as
    given (no second copy in a flat index): the ids a flat index returns, row for row."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3000, 24)).astype("float32")
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    xq = rng.normal(size=(50, 24)).astype("float32")
    probe = RecallProbe(x, xq, n_rows=200, seed=0)
    flat = faiss.IndexFlatIP(24)
    flat.add(x)
    truth_rows = flat.search(x[probe.rows], 11)[1]
    for got, want, row in zip(probe.gt_rows, truth_rows, probe.rows, strict=True):
        np.testing.assert_array_equal(got, want[want != row][:10])
    np.testing.assert_array_equal(probe.gt_q, flat.search(xq, 10)[1])
    assert probe.measure(flat)["recall_corpus"] == 1.0
