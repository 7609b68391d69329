"""Per-document results of clean and chunk, kept by content: a rerun computes only what
changed, a damaged entry is found and computed again, and params or code move the space."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tasks.core import result_cache
from tasks.core.result_cache import ResultCache, document_key
from tests.workspace import make_workspace, run_stages

UP_TO_CHUNK = ("ingest", "clean", "chunk")


def manifest(ws: Path, folder: str) -> dict:
    return json.loads((ws / "data" / folder / "_manifest.json").read_text())


def shards(ws: Path, stage: str) -> list[Path]:
    return sorted((ws / "data/cache/results" / stage).glob("*/part-*.parquet"))


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_roundtrip_and_a_damaged_shard_is_dropped(tmp_path):
    cache = ResultCache(tmp_path, "clean", "space-a")
    assert cache.get(["k1", "k2"]) == [None, None]
    cache.put(["k1", "k2"], [{"text": "one"}, {"reason": "too short"}])
    assert cache.close()["computed"] == 2
    again = ResultCache(tmp_path, "clean", "space-a")
    assert again.get(["k2", "zz", "k1"]) == [{"reason": "too short"}, None, {"text": "one"}]
    assert ResultCache(tmp_path, "clean", "space-b").get(["k1"]) == [None]  # other params
    (shard,) = sorted((tmp_path / "clean").glob("*/part-*.parquet"))
    flip_byte(shard)
    damaged = ResultCache(tmp_path, "clean", "space-a")
    assert list(damaged.dropped) == [shard.name] and "corrupted" in damaged.dropped[shard.name]
    assert damaged.get(["k1"]) == [None] and not shard.exists()


def test_compaction_keeps_the_cache_bounded(tmp_path):
    compacted = []
    for night in range(4):  # each run sees 10 documents, 5 of them new
        cache = ResultCache(tmp_path, "chunk", "s")
        keys = [f"k{i}" for i in range(night * 5, night * 5 + 10)]
        found = cache.get(keys)
        missing = [k for k, v in zip(keys, found, strict=True) if v is None]
        cache.put(missing, [[[0, 1, 1]]] * len(missing))
        compacted.append(cache.close()["compacted"])
    assert compacted == [0, 0, 0, 1]  # night 4: 15 of 25 rows dead, over MAX_DEAD_SHARE
    (shard,) = sorted((tmp_path / "chunk" / "s").glob("part-*.parquet"))
    assert result_cache.shard_problem(shard) is None
    assert ResultCache(tmp_path, "chunk", "s").rows == 10
    ResultCache(tmp_path, "chunk", "t").close()  # a run in another space drops this one
    assert [p.name for p in (tmp_path / "chunk").iterdir()] == ["t"]


def test_leftover_of_a_killed_write_is_removed(tmp_path):
    folder = tmp_path / "clean" / "s"
    folder.mkdir(parents=True)
    dead = folder / ".part-abc.parquet.tmp-999999999"  # no such process
    dead.write_bytes(b"half a shard")
    ResultCache(tmp_path, "clean", "s")
    assert not dead.exists()


def test_keys_tell_fields_apart():
    assert document_key("ab", "c") != document_key("a", "bc")
    assert document_key("a", None) != document_key("a", "")


@pytest.fixture(scope="module")
def chunked(tmp_path_factory):
    """The sample ingested, cleaned and chunked once (caches filled)."""
    ws = make_workspace(tmp_path_factory.mktemp("results_ws"))
    run_stages(ws, UP_TO_CHUNK)
    return ws


def test_a_damaged_entry_is_detected_and_computed_again(chunked, tmp_path):
    ws = make_workspace(tmp_path / "ws")
    shutil.copytree(chunked / "data", ws / "data", dirs_exist_ok=True)
    before = {f: (ws / "data" / f).read_bytes() for f in ("02_clean/docs.parquet",
                                                          "03_chunk/chunks.parquet")}
    (clean_shard,), (chunk_shard,) = shards(ws, "clean"), shards(ws, "chunk")
    flip_byte(clean_shard)
    flip_byte(chunk_shard)
    run_stages(ws, ("clean", "chunk"))
    for folder, shard in (("02_clean", clean_shard), ("03_chunk", chunk_shard)):
        m = manifest(ws, folder)
        assert shard.name in m["cache_dropped"], m["cache_dropped"]
        assert m["reuse"]["reused"] == 0 and m["reuse"]["computed"] > 0
    for f, data in before.items():
        assert (ws / "data" / f).read_bytes() == data, f
    run_stages(ws, ("clean", "chunk"))  # the recomputed results were written back
    assert manifest(ws, "03_chunk")["reuse"]["computed"] == 0


def test_the_space_moves_with_params_and_code(chunked, monkeypatch):
    from tasks.core.params_file import write_overrides
    from tasks.core.runtime import start_stage

    def space(stage: str) -> str:
        run = start_stage(stage, chunked)
        if stage == "chunk":  # its facts (the tokenizer's files, the budget) as the task gives
            from tasks.chunk import chunk_fingerprint

            chunk_fingerprint(run, run.params.chunk.max_tokens)
        return run.result_cache(**run.facts).folder.name

    first = {s: space(s) for s in ("clean", "chunk")}
    original = (chunked / "params.yaml").read_text()
    try:
        write_overrides(chunked / "params.yaml", {"clean.lowercase": True,
                                                  "chunk.max_tokens": 120})
        assert space("clean") != first["clean"] and space("chunk") != first["chunk"]
        write_overrides(chunked / "params.yaml", {"clean.lowercase": False,
                                                  "chunk.max_tokens": 200})
        assert {s: space(s) for s in ("clean", "chunk")} == first
    finally:
        (chunked / "params.yaml").write_text(original)
    real = result_cache.sha256_file
    monkeypatch.setattr(result_cache, "sha256_file", lambda p: (
        "edited" if Path(p).name == "clean.py" else real(p)))
    assert space("clean") != first["clean"]  # the stage's code is part of the space


def test_rerun_computes_only_changed_documents(chunked, tmp_path):
    ws = make_workspace(tmp_path / "ws")
    shutil.copytree(chunked / "data", ws / "data", dirs_exist_ok=True)
    sample = ws / "data/sample"
    (sample / "astronomy/comets.txt").write_text(
        (sample / "astronomy/comets.txt").read_text() + "\nA new comet was seen in May.\n")
    (sample / "baking/new-bread.txt").write_text("Rye bread needs a sour starter and a long, "
                                                 "slow rise before it goes in the oven.\n")
    run_stages(ws, UP_TO_CHUNK)
    assert manifest(ws, "01_ingest")["reuse"]["files"]["computed"] == 2
    for folder in ("02_clean", "03_chunk"):
        reuse = manifest(ws, folder)["reuse"]
        assert reuse["computed"] == 2 and reuse["reused"] > 20, (folder, reuse)
    fresh = make_workspace(tmp_path / "fresh")
    shutil.rmtree(fresh / "data/sample")
    shutil.copytree(sample, fresh / "data/sample")
    run_stages(fresh, UP_TO_CHUNK)
    for f in ("01_ingest/docs.parquet", "01_ingest/rejects.parquet", "02_clean/docs.parquet",
              "02_clean/rejects.parquet", "03_chunk/chunks.parquet"):
        assert (ws / "data" / f).read_bytes() == (fresh / "data" / f).read_bytes(), f
    (sample / "baking/new-bread.txt").unlink()
    run_stages(ws, ("ingest",))  # the files copied in above now have known stats: not read
    hashes = manifest(ws, "01_ingest")["reuse"]["hashes"]
    assert hashes["computed"] == 0 and hashes["reused"] > 90, hashes


def test_cache_commands_verify_and_collect_result_caches(chunked, tmp_path, capsys):
    """`embedpipe cache verify` names a damaged result shard (exit 1); `cache gc` drops the
    spaces of other params and the results no current document needs."""
    from flows.cli import main

    ws = make_workspace(tmp_path / "ws")
    shutil.copytree(chunked / "data", ws / "data", dirs_exist_ok=True)
    assert main(["--root", str(ws), "cache", "verify"]) == 0
    stale = ws / "data/cache/results/clean" / ("0" * 32)  # another params' space
    shutil.copytree(shards(ws, "clean")[0].parent, stale)
    extra = ResultCache(ws / "data/cache/results", "chunk", "x")  # a result nobody needs
    extra.folder = shards(ws, "chunk")[0].parent
    extra.put(["no-such-document"], [[[0, 1, 1]]])
    extra._flush()
    assert main(["--root", str(ws), "cache", "gc"]) == 0
    out = capsys.readouterr().out
    assert not stale.exists() and "result cache gc clean: spaces_dropped 1" in out
    assert "result cache gc chunk: spaces_dropped 0, kept " in out and "dropped 1" in out
    (chunk_shard,) = shards(ws, "chunk")
    flip_byte(chunk_shard)
    assert main(["--root", str(ws), "cache", "verify"]) == 1
    assert f"bad shard {chunk_shard}: its bytes do not match" in capsys.readouterr().out
