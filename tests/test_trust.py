"""The rows of issue 29 this side covers, each as a new user or an operator met them: a
fingerprint names exactly one content, outputs depend on inputs, params and code only, every
read is checked, published folders are named and checked by content."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.core.params_file import write_overrides
from tests.conftest import stage_outputs
from tests.workspace import copy_workspace, run_stages

UP_TO_DEDUP = ("ingest", "clean", "chunk", "finetune", "encode", "reduce", "dedup")


@pytest.fixture(scope="module")
def built(sample_run, tmp_path_factory) -> Path:
    """The sample run up to dedup, for the module."""
    return copy_workspace(sample_run, tmp_path_factory.mktemp("trust") / "ws", through="dedup")


@pytest.fixture
def ws(built, tmp_path) -> Path:
    """A copy of the built workspace each test may change."""
    return Path(shutil.copytree(built, tmp_path / "ws", symlinks=True))


def manifest(ws: Path, folder: str) -> dict:
    return json.loads((ws / "data" / folder / "_manifest.json").read_text())


@pytest.mark.slow
def test_search_settings_change_the_index_and_the_published_version(ws):
    """Row 1: `--set search.mode=dense --set search.rrf_k=5` after a run reran index under
    the same fingerprint, publish kept the old folder and search stayed hybrid, rrf_k 60."""
    from tasks.query.search import load_index_folder
    from tasks.storage.published import current_index

    run_stages(ws, ("index", "evaluate", "publish"))
    first = manifest(ws, "07_index")["fingerprint"]
    write_overrides(ws / "params.yaml", {"search.mode": "dense", "search.rrf_k": 5})
    run_stages(ws, ("index", "evaluate", "publish"))
    assert manifest(ws, "07_index")["fingerprint"] != first
    folder = load_index_folder(current_index(ws / "published"))
    assert (folder.search.mode, folder.search.rrf_k) == ("dense", 5)
    assert len([p for p in (ws / "published").iterdir() if p.is_dir()]) == 2


def _busy(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


@pytest.mark.slow
def test_loaded_machine_builds_the_same_index_bytes(ws, monkeypatch):
    """Row 2: `index.factory: auto` timed a query and built IVF under load, Flat when idle,
    under one fingerprint. Now: busy CPU threads and a clock a thousand times slower (a far
    slower machine) give the same index folder, byte for byte (timings reported aside)."""
    run_stages(ws, ("index",))
    idle = stage_outputs(ws / "data")["index"]
    shutil.rmtree(ws / "data/07_index")  # a fresh build, not an update of the first
    hogs = _busy(4)
    real = time.perf_counter
    started = real()
    monkeypatch.setattr(time, "perf_counter", lambda: started + 1000 * (real() - started))
    try:
        run_stages(ws, ("index",))
    finally:
        monkeypatch.undo()
        for p in hogs:
            p.kill()
            p.wait()
    loaded = stage_outputs(ws / "data")["index"]
    assert loaded == idle
    assert loaded["card.json"]["factory"] == "Flat"


NEW_DOC = ("Pulsar timing arrays watch dozens of millisecond pulsars for years. A passing "
           "low-frequency gravitational wave stretches and squeezes the space between Earth "
           "and each pulsar, so the clock-like pulses arrive a few nanoseconds early or late.\n")
BUILD = (*UP_TO_DEDUP, "index")


def flip_byte(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    i = int(len(data) * at)
    data[i] ^= 0x5A
    path.write_bytes(bytes(data))


@pytest.mark.slow
def test_a_corrupt_cache_shard_is_named_dropped_and_encoded_again(ws, built, tmp_path, caplog):
    """Rows 3 and 4: one byte flipped in a vector-cache shard, then one new document: the
    corrupt vectors were reused (NaN that crashed evaluate, or wrong finite vectors published
    silently). Now the shard is named in the log and dropped, and every output equals that of
    a run that never had the shard."""
    shards = sorted((ws / "data/cache/vectors").glob("*/part-*.parquet"))
    assert shards
    flip_byte(shards[0])
    (ws / "data/sample/astronomy/pulsar-timing.txt").write_text(NEW_DOC)
    with caplog.at_level("WARNING"):
        run_stages(ws, BUILD)
    assert f"{shards[0]} its bytes do not match the checksum" in caplog.text
    assert shards[0].name in manifest(ws, "04_encode")["cache_dropped"]
    clean = Path(shutil.copytree(built, tmp_path / "clean", symlinks=True))
    shutil.rmtree(clean / "data/cache/vectors")
    (clean / "data/sample/astronomy/pulsar-timing.txt").write_text(NEW_DOC)
    run_stages(clean, BUILD)
    got, want = stage_outputs(ws / "data"), stage_outputs(clean / "data")
    for stage in BUILD:
        assert got[stage] == want[stage], stage


@pytest.mark.slow
def test_cache_verify_names_and_drops_a_bad_shard(ws, capsys):
    """`embedpipe cache verify`: each shard's checksum and vectors; exit 1 naming the bad."""
    from flows.cli import main

    assert main(["--root", str(ws), "cache", "verify"]) == 0
    shard = sorted((ws / "data/cache/vectors").glob("*/part-*.parquet"))[0]
    flip_byte(shard, 0.9)
    assert main(["--root", str(ws), "cache", "verify"]) == 1
    out = capsys.readouterr().out
    assert f"bad shard {shard}: its bytes do not match" in out and not shard.exists()


@pytest.mark.slow
def test_a_damaged_stage_file_is_refused_by_name(ws):
    """Stage files are checked against their manifest's sha256 when read: a flipped byte in
    encode's vectors stops reduce with the file's name and the fix, never a raw Parquet
    error or silently other vectors."""
    flip_byte(ws / "data/04_encode/vectors.parquet", 0.6)
    with pytest.raises(ValueError, match=r"04_encode/vectors.parquet: does not match its "
                                         r"manifest's sha256 .* rerun that stage"):
        run_stages(ws, ("reduce",))


def _index_folder(tmp_path: Path, payload: bytes) -> Path:
    """A small stage output folder (a manifest with files, sizes and sha256)."""
    from tasks.core.io import StageOutput

    out = StageOutput(tmp_path / "07_index", "index", "f" * 64)
    out.path("index.faiss").write_bytes(payload)
    out.write_json("card.json", {"factory": "Flat"})
    return out.commit({})


def test_a_published_version_that_differs_is_replaced_whole(tmp_path):
    """Row 4: a published folder of the same version name kept its bad docs.faiss, since
    publish skipped an existing folder. Now one that differs by a byte is swapped whole."""
    from tasks.core.integrity import folder_problems
    from tasks.storage.published import publish_folder

    index_dir = _index_folder(tmp_path, b"good index bytes" * 100)
    target = tmp_path / "published"
    final = publish_folder(index_dir, target, "index-1", {}, keep=3)
    flip_byte(final / "index.faiss")
    assert folder_problems(final, fast=False) == [
        ("index.faiss", "its sha256 is not its manifest's (damaged or changed)")]
    again = publish_folder(index_dir, target, "index-1", {}, keep=3)
    assert again == final and not folder_problems(final, fast=False)
    assert (final / "index.faiss").read_bytes() == (index_dir / "index.faiss").read_bytes()
    assert sorted(p.name for p in target.iterdir()) == ["CURRENT", "index-1"]  # no leftovers


def test_a_damaged_index_folder_is_not_published(tmp_path):
    from tasks.storage.published import publish_folder

    index_dir = _index_folder(tmp_path, b"x" * 1000)
    (index_dir / "index.faiss").write_bytes(b"x" * 10)
    with pytest.raises(ValueError, match=r"index.faiss: 10 bytes, its manifest says 1000 "
                                         r"\(truncated or rewritten\); rerun `embedpipe stage"):
        publish_folder(index_dir, tmp_path / "published", "index-1", {}, keep=3)


def test_search_start_up_hashes_a_file_once_per_change(tmp_path, monkeypatch):
    """The fast path: sizes always, sha256 once per change of a file's stat."""
    from tasks.core import integrity

    index_dir = _index_folder(tmp_path, b"y" * 5000)
    hashed = []
    real = integrity.sha256_file
    monkeypatch.setattr(integrity, "sha256_file", lambda p: hashed.append(p.name) or real(p))
    records = tmp_path / "records"
    assert integrity.folder_problems(index_dir, records) == []
    assert sorted(hashed) == ["card.json", "index.faiss"]
    hashed.clear()
    assert integrity.folder_problems(index_dir, records) == [] and hashed == []
    flip_byte(index_dir / "index.faiss")  # rewritten in place: another mtime, hashed again
    assert integrity.folder_problems(index_dir, records)[0][0] == "index.faiss"
    assert integrity.folder_problems(index_dir, records, fast=False)[0][0] == "index.faiss"


@pytest.mark.slow
def test_truncated_published_index_is_named_and_repaired(tmp_path, sample_flow_run,
                                                        prefect_server, capsys):
    """Row 5: a truncated published index.faiss gave a raw FAISS read error, and `embedpipe
    run`, `stage publish` and `run --force` all left it broken. Now search names the file and
    the fix; `embedpipe run` (publish reruns, though DVC calls it fresh) and `stage publish`
    repair it."""
    from flows.cli import main
    from flows.pipeline import pipeline
    from tasks.storage.published import current_index

    ws = copy_workspace(sample_flow_run[0], tmp_path / "ws")  # the flow's run
    index_file = current_index(ws / "published") / "index.faiss"
    for repair in (lambda: pipeline(root=str(ws)),
                   lambda: main(["--root", str(ws), "stage", "publish"])):
        size = index_file.stat().st_size
        index_file.write_bytes(index_file.read_bytes()[:size // 2])
        assert main(["--root", str(ws), "search", "neutron star"]) == 2
        err = capsys.readouterr().err
        assert f"{index_file}: {size // 2} bytes, its manifest says {size}" in err
        assert "embedpipe stage publish" in err
        assert main(["--root", str(ws), "status"]) == 0
        assert "publish   stale    published folder damaged" in capsys.readouterr().out
        repair()
        assert index_file.stat().st_size == size
        assert main(["--root", str(ws), "search", "neutron star"]) == 0
    assert "neutron" in capsys.readouterr().out


def test_cache_shards_with_bad_vectors_are_dropped_even_with_a_good_checksum(tmp_path):
    """Finite and unit length are checked too: a shard written with a NaN or a vector of
    length 1.295 (what the flipped byte of row 3 gave) is named and never served."""
    import numpy as np

    from tasks.encoders import vector_cache

    x = np.eye(3, 4, dtype="float32")
    good = vector_cache.append(tmp_path, "space-a", ["k1", "k2", "k3"], x)
    nan = vector_cache.append(tmp_path, "space-a", ["k4"], np.full((1, 4), np.nan, "float32"))
    long = vector_cache.append(tmp_path, "space-a", ["k5"], np.eye(1, 4, dtype="float32") * 1.295)
    bad = dict(vector_cache.verify(tmp_path, "space-a", d=4, unit=True))
    assert set(bad) == {nan, long} and good.exists() and not nan.exists()
    assert "row 0 holds a NaN or infinite value" in bad[nan]
    assert "row 0 has length 1.295, expected 1" in bad[long]
    found, _ = vector_cache.lookup(tmp_path, "space-a", ["k1", "k4", "k5"], 4)
    assert found.tolist() == [True, False, False]


def test_search_index_may_name_a_local_publish_target(tmp_path):
    """`--index` given a publish target folder reads the version its CURRENT names, as it
    does for an s3://bucket/prefix target."""
    import argparse
    import json

    from flows.cli import _index_dir

    target = tmp_path / "published"
    (target / "index-abc").mkdir(parents=True)
    (target / "CURRENT").write_text(json.dumps({"version": "index-abc"}))
    assert _index_dir(argparse.Namespace(index=str(target))) == target / "index-abc"
    plain = tmp_path / "folder"
    assert _index_dir(argparse.Namespace(index=str(plain))) == plain
