from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.core.fingerprint import stage_fingerprint
from tasks.core.io import STAMP_KEY, StageOutput, check_lineage, read_manifest, read_table
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
