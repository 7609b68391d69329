"""Streaming stages: tiny batches give exactly what one batch gives."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks import encode
from tasks.core import io as stage_io
from tasks.core.config import IngestConfig
from tasks.core.io import STAMP_KEY, StageOutput, iter_batches, read_manifest, read_table
from tasks.core.params_file import write_overrides
from tasks.documents import decoding as ingest
from tests.workspace import REPO, run_stages

STAGES = ("ingest", "clean", "chunk", "finetune", "encode")
OUTPUTS = ("01_ingest/docs.parquet", "01_ingest/rejects.parquet", "02_clean/docs.parquet",
           "02_clean/rejects.parquet", "03_chunk/chunks.parquet", "04_encode/vectors.parquet")
SENTENCES = [
    "Tides rise twice a day because the Moon pulls the oceans toward it.",
    "A sourdough starter is flour and water colonised by wild yeast and bacteria.",
    "Compost heats up as microbes break down greens and browns.",
    "The Rust borrow checker rejects two mutable references to the same value.",
    "Basalt forms when lava rich in iron and magnesium cools quickly.",
]
# Rows per read batch, per row group, bytes per text block, batches per encode window.
TINY = {"BATCH_ROWS": 3, "ROW_GROUP_ROWS": 5, "BLOCK_BYTES": 7, "WINDOW_BATCHES": 1}
HUGE = {"BATCH_ROWS": 1_000_000, "ROW_GROUP_ROWS": 1_000_000, "BLOCK_BYTES": 1 << 30,
        "WINDOW_BATCHES": 1_000_000}


def write_corpus(folder: Path) -> None:
    """Every format, repeated texts (across encode windows), faulty records and files."""
    folder.mkdir(parents=True)
    long_doc = " ".join(SENTENCES[i % 5] + f" Point {i}." for i in range(60))
    records = [{"id": f"r{i}", "title": f"Note {i}", "text": SENTENCES[i % 5] * 2}
               for i in range(12)]
    records += [{"id": "long", "text": long_doc}, {"id": "empty", "text": " "}]
    lines = [json.dumps(r) for r in records]
    lines.insert(4, "{not json")
    (folder / "notes.jsonl").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode())
    (folder / "table.csv").write_text(
        'id,text,topic\r\n1,"Quoted, with a comma and\r\na line break inside it.",a\r\n'
        f"2,{SENTENCES[0]},b\r\n3,{SENTENCES[1]},c,extra\r\n", newline="")
    rows = pa.table({"doc_key": [f"p{i}" for i in range(7)],
                     "content": [SENTENCES[i % 5] + " (parquet)" for i in range(7)]})
    pq.write_table(rows, folder / "rows.parquet", row_group_size=2)
    (folder / "guide.md").write_text(f"# Guide\n\n{long_doc}\n\n- one\n- two\n")
    (folder / "page.html").write_text(f"<html><title>T</title><p>{SENTENCES[2]}</p></html>")
    (folder / "latin.txt").write_bytes("caf\u00e9 au lait".encode("latin-1"))
    (folder / "broken.parquet").write_bytes(b"PAR1 nope")


def run_with(ws: Path, sizes: dict[str, int]) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stage_io, "BATCH_ROWS", sizes["BATCH_ROWS"])
        mp.setattr(stage_io, "ROW_GROUP_ROWS", sizes["ROW_GROUP_ROWS"])
        mp.setattr(ingest, "BLOCK_BYTES", sizes["BLOCK_BYTES"])
        mp.setattr(encode, "WINDOW_BATCHES", sizes["WINDOW_BATCHES"])
        run_stages(ws, STAGES)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("streaming")
    write_corpus(base / "corpus")
    out = {}
    for name, sizes in (("tiny", TINY), ("huge", HUGE)):
        ws = base / name
        ws.mkdir()
        shutil.copy(REPO / "params.yaml", ws / "params.yaml")
        write_overrides(ws / "params.yaml", {
            "ingest.source": str(base / "corpus"), "encode.device": "cpu",
            # onnx int8 encodes one text per call, so windows cannot change a vector's bits;
            # OpenVINO batches, and a batch changes only rounding (tests/test_cpu_backends.py)
            "encode.backend": "onnx",
            "encode.batch_size": 2, "paths.vector_cache": str(ws / "cache")})
        run_with(ws, sizes)
        out[name] = ws
    return out


def manifest(ws: Path, rel: str) -> dict:
    return read_manifest(ws / "data" / Path(rel).parent)


@pytest.mark.parametrize("rel", OUTPUTS)
def test_tiny_batches_give_one_batch_output(runs, rel):
    tiny, huge = (pq.read_table(runs[n] / "data" / rel) for n in ("tiny", "huge"))
    assert tiny.schema.equals(huge.schema, check_metadata=True)
    if "vector" in tiny.column_names:  # other windows batch texts differently: float noise
        assert tiny.drop(["vector"]).equals(huge.drop(["vector"]))
        x, y = (np.stack(t.column("vector").to_numpy(zero_copy_only=False)) for t in (tiny, huge))
        np.testing.assert_allclose(x, y, atol=1e-4)
    else:
        assert tiny.equals(huge)
    a, b = manifest(runs["tiny"], rel), manifest(runs["huge"], rel)
    assert (a["fingerprint"], a["rows"], a.get("changes")) == (
        b["fingerprint"], b["rows"], b.get("changes"))
    if rel.endswith(("docs.parquet", "chunks.parquet")):
        assert pq.ParquetFile(runs["tiny"] / "data" / rel).num_row_groups > 1
        assert pq.ParquetFile(runs["huge"] / "data" / rel).num_row_groups == 1


def test_corpus_exercises_what_streaming_must_keep(runs):
    rows = manifest(runs["tiny"], "04_encode/x")["rows"]
    assert rows["chunks"] > rows["unique_texts"] > 2 * TINY["BATCH_ROWS"]  # repeats, windows
    assert rows["encoded"] == rows["unique_texts"] and rows["reused"] == 0
    reasons = pq.read_table(runs["tiny"] / "data/01_ingest/rejects.parquet").column(
        "reason").to_pylist()
    assert any("invalid JSON" in r for r in reasons) and any("UTF-8" in r for r in reasons)
    assert any("Parquet" in r for r in reasons)


def test_rerun_without_shared_cache_counts_and_vectors_hold(runs, tmp_path):
    """Windows of 2 texts with the shared cache off: repeats are still encoded once."""
    ws = tmp_path / "ws"
    shutil.copytree(runs["tiny"], ws, ignore=shutil.ignore_patterns("cache"))
    write_overrides(ws / "params.yaml", {"encode.cache": False})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(encode, "WINDOW_BATCHES", 1)
        run_stages(ws, ("encode",))
    got = read_manifest(ws / "data/04_encode")["rows"]
    assert got == manifest(runs["huge"], "04_encode/x")["rows"]
    assert sorted(p.name for p in (ws / "data/04_encode").iterdir()) == [
        "_manifest.json", "vectors.parquet"]
    a, b = (pq.read_table(w / "data/04_encode/vectors.parquet") for w in (ws, runs["huge"]))
    assert a.drop(["vector"]).equals(b.drop(["vector"]))


def test_incremental_rerun_reuses_every_vector(runs, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(runs["tiny"], ws)
    write_overrides(ws / "params.yaml", {"paths.vector_cache": str(ws / "cache")})
    run_with(ws, TINY)
    rows = read_manifest(ws / "data/04_encode")["rows"]
    assert rows["encoded"] == 0 and rows["reused"] == rows["unique_texts"]
    assert read_manifest(ws / "data/01_ingest")["changes"]["unchanged"] == read_manifest(
        ws / "data/01_ingest")["rows"]["docs"]


@pytest.mark.parametrize("data", [
    b'{"id": "a", "text": "x"}\r\n\r\n{"id": "b", "text": "y"}\x0b{"id": "c", "text": "z"}',
    "\ufeff{\"id\": \"\u00e9\", \"text\": \"\u20ac\u2028\"}\n[1]\n".encode(),
    b'{"id": "a", "text": "x"}\n' + b"\xe2\x82" + b"\n",
    b" \n\t\r\n ",
])
def test_text_read_in_blocks_parses_as_whole(monkeypatch, data):
    names = ("x.jsonl", "x.csv")
    whole = [ingest.parse_file(n, data, IngestConfig()) for n in names]
    monkeypatch.setattr(ingest, "BLOCK_BYTES", 1)
    assert [ingest.parse_file(n, data, IngestConfig()) for n in names] == whole


def test_table_opened_before_its_fingerprint_is_stamped_on_commit(tmp_path, monkeypatch):
    monkeypatch.setattr(stage_io, "ROW_GROUP_ROWS", 2)
    out = StageOutput(tmp_path / "01_ingest", "ingest")
    writer = out.open_table("t.parquet", pa.schema([("a", pa.int64())]))
    for start in range(0, 7, 3):
        writer.write(pa.table({"a": list(range(start, min(start + 3, 7)))}))
    out.set_fingerprint("c" * 64)
    out.commit({})
    path = tmp_path / "01_ingest/t.parquet"
    assert sorted(p.name for p in path.parent.iterdir()) == ["_manifest.json", "t.parquet"]
    assert pq.read_schema(path).metadata[STAMP_KEY] == b"c" * 64
    assert pq.ParquetFile(path).num_row_groups == 4  # rows 2 + 2 + 2 + 1
    m = read_manifest(path.parent, "ingest")
    assert read_table(path.parent, "t.parquet", m).column("a").to_pylist() == list(range(7))
    sizes = [t.num_rows for t in iter_batches(path.parent, "t.parquet", m, batch_rows=3)]
    assert sum(sizes) == 7 and max(sizes) <= 3


def test_writer_refuses_rows_of_another_schema(tmp_path):
    out = StageOutput(tmp_path / "x", "clean", "d" * 64)
    writer = out.open_table("t.parquet", pa.schema([("a", pa.int64())]))
    with pytest.raises(TypeError, match="t.parquet: rows have schema"):
        writer.write(pa.table({"a": ["text"]}))
    out.abort()
    assert not out.tmp_dir.exists()


def test_reader_of_streamed_input_refuses_mixed_runs(tmp_path):
    out = StageOutput(tmp_path / "x", "clean", "e" * 64)
    out.open_table("t.parquet", pa.schema([("a", pa.int64())])).write(pa.table({"a": [1]}))
    out.commit({})
    m = read_manifest(tmp_path / "x") | {"fingerprint": "f" * 64}
    with pytest.raises(ValueError, match="mixes outputs of two runs"):
        next(iter_batches(tmp_path / "x", "t.parquet", m))


def test_parquet_bytes_reject_reason_unchanged():
    buf = io.BytesIO(b"PAR1 nope")
    docs, rejects = ingest.parse_file("b.parquet", buf.getvalue(), IngestConfig())
    assert docs == [] and rejects[0]["reason"].startswith(
        "Could not open Parquet input source '<Buffer>': Parquet magic bytes not found")
