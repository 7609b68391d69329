from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.core.fingerprint import stage_fingerprint
from tasks.core.io import (
    STAMP_KEY,
    StageOutput,
    check_lineage,
    read_manifest,
    read_table,
    read_with_vectors,
)
from tasks.core.vectors import arrow_to_vectors, vectors_to_arrow


def test_vectors_roundtrip_contiguous_float32():
    x = np.random.default_rng(0).normal(size=(5, 3))
    back = arrow_to_vectors(pa.chunked_array([vectors_to_arrow(x)]))
    assert back.dtype == np.float32 and back.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(back, x.astype("float32"))


def test_stage_output_is_stamped_and_swapped_atomically(tmp_path):
    out_dir = tmp_path / "05_reduce"
    out_dir.mkdir()
    (out_dir / "stale.parquet").write_text("old run")
    out = StageOutput(out_dir, "reduce", "f" * 64)
    out.write_table("t.parquet", pa.table({"a": [1, 2]}))
    assert (out_dir / "stale.parquet").exists()  # nothing visible until commit
    out.commit({"rows": {"t": 2}})
    assert sorted(p.name for p in out_dir.iterdir()) == ["_manifest.json", "t.parquet"]
    manifest = read_manifest(out_dir, "reduce")
    assert manifest["rows"] == {"t": 2} and "t.parquet" in manifest["files"]
    assert pq.read_schema(out_dir / "t.parquet").metadata[STAMP_KEY] == b"f" * 64
    assert read_table(out_dir, "t.parquet", manifest).num_rows == 2


def test_reader_refuses_mixed_runs(tmp_path):
    out = StageOutput(tmp_path / "x", "encode", "a" * 64)
    out.write_table("v.parquet", pa.table({"a": [1]}))
    out.commit({})
    manifest = json.loads((tmp_path / "x" / "_manifest.json").read_text())
    manifest["fingerprint"] = "b" * 64
    with pytest.raises(ValueError, match="mixes outputs of two runs"):
        read_table(tmp_path / "x", "v.parquet", manifest)
    with pytest.raises(ValueError, match="expected output of stage 'reduce', found 'encode'"):
        read_manifest(tmp_path / "x", "reduce")


def test_lineage_mismatch_names_both():
    with pytest.raises(ValueError, match="inputs disagree on stage 'chunk'"):
        check_lineage({"reduce": {"lineage": {"chunk": "1" * 64}},
                       "chunk": {"lineage": {"chunk": "2" * 64}}})


def test_fingerprint_depends_on_config_and_inputs_only():
    a = stage_fingerprint("reduce", {"pca": 8}, {"encode": "x"})
    assert a == stage_fingerprint("reduce", {"pca": 8}, {"encode": "x"})
    assert a != stage_fingerprint("reduce", {"pca": 16}, {"encode": "x"})
    assert a != stage_fingerprint("reduce", {"pca": 8}, {"encode": "y"})


def test_flow_runs_that_died_holding_the_lock_reach_the_next_flow_run(tmp_path):
    """A killed flow run is passed on through a `dvc repro` stage that takes the lock next,
    to the next flow run, which takes over marking it; a clean release passes nothing."""
    import subprocess
    import sys

    from tasks.core.lock import HOLDER_FILE, workspace_lock

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / HOLDER_FILE).write_text(json.dumps(
        {"pid": dead.pid, "what": "embedpipe flow", "flow_run_id": "run-1"}))
    with workspace_lock(tmp_path, "dvc stage chunk") as runs:
        assert runs == ["run-1"]
    with workspace_lock(tmp_path, "embedpipe flow", run_id="run-2") as runs:
        assert runs == ["run-1"]
    with workspace_lock(tmp_path, "embedpipe flow", run_id="run-3") as runs:
        assert runs == []  # run-2 released the lock: it did not die


def test_long_text_is_cut_into_parts_at_breaks_and_nothing_is_lost():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from tasks.documents.decoding import text_parts

    @settings(max_examples=200, derandomize=True)
    @given(st.text(alphabet=st.sampled_from("ab \n"), max_size=300),
           st.integers(min_value=1, max_value=40), st.integers(min_value=1, max_value=50))
    def check(text, limit, block):
        blocks = [text[i:i + block] for i in range(0, len(text), block)]
        parts = list(text_parts(blocks, limit))
        assert "".join(parts) == text
        assert all(0 < len(p) <= limit for p in parts)
        for p in parts[:-1]:  # a part ends at a break whenever it held one past its start
            assert p.endswith((" ", "\n")) or not any(c in " \n" for c in p[1:])

    check()
    paragraphs = "one two.\n\nthree four five.\n\nsix"
    assert list(text_parts([paragraphs], 20)) == ["one two.\n\n", "three four five.\n\n",
                                                  "six"]


def test_a_zombie_writer_counts_as_dead():
    """A killed stage whose parent died too stays a zombie until init reaps it: its leftovers
    must go all the same (the kill -9 harness once found one kept)."""
    import subprocess
    import time

    from tasks.core.io import pid_alive

    child = subprocess.Popen(["sleep", "30"])
    try:
        assert pid_alive(child.pid)
        child.kill()
        time.sleep(0.3)  # killed, not yet reaped: a zombie
        assert not pid_alive(child.pid)
    finally:
        child.wait()


def test_vectors_read_by_row_group_equal_the_whole_file_read(tmp_path):
    """read_with_vectors decodes a row group at a time into one matrix: the same floats
    as reading the column whole, the other (or the named) columns beside them."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2500, 8)).astype("float32")
    out = StageOutput(tmp_path / "v", "reduce", "a" * 64)
    table = pa.table({"chunk_id": [f"c{i}" for i in range(2500)], "n": np.arange(2500),
                      "vector": vectors_to_arrow(x)})
    out.write_table("v.parquet", table, row_group_size=700)  # the last group short
    out.commit({})
    manifest = read_manifest(tmp_path / "v", "reduce")
    assert pq.ParquetFile(tmp_path / "v" / "v.parquet").num_row_groups == 4
    rows, got = read_with_vectors(tmp_path / "v", "v.parquet", manifest, "vector")
    assert got.dtype == np.float32 and got.flags["C_CONTIGUOUS"] and got.flags["WRITEABLE"]
    assert np.array_equal(got, arrow_to_vectors(read_table(tmp_path / "v", "v.parquet",
                                                           manifest).column("vector")))
    assert rows.column_names == ["chunk_id", "n"] and rows.column("n").to_pylist()[-1] == 2499
    named, _ = read_with_vectors(tmp_path / "v", "v.parquet", manifest, "vector", ["n"])
    assert named.column_names == ["n"]
    assert read_table(tmp_path / "v", "v.parquet", manifest, ["n", "chunk_id"]).column_names == [
        "n", "chunk_id"]


def test_vector_problem_names_the_first_bad_row_past_a_block(monkeypatch):
    """Lengths are checked block by block; the row named is still the matrix's own."""
    from tasks.core import vectors  # noqa: PLC0415

    monkeypatch.setattr(vectors, "CHECK_BLOCK_ELEMS", 16)  # 4 rows of d=4 a block
    x = np.eye(4, dtype="float32")[np.arange(10) % 4]
    assert vectors.vector_problem(x, unit=True) is None
    x[9] *= 2
    assert vectors.vector_problem(x, unit=True).startswith("row 9 has length 2")
    x[6, 1] = np.nan
    assert vectors.vector_problem(x, unit=True).startswith("row 6 holds a NaN")
