from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.core.config import IngestConfig
from tasks.documents.decoding import file_format, make_doc_id, parse_file
from tasks.documents.sources import select_paths

CFG = IngestConfig()


def test_select_paths_applies_globs():
    paths = ["a.txt", ".hidden/x.txt", "fin/queries.jsonl", "fin/qrels/test.tsv",
             "fin/corpus.jsonl"]
    assert select_paths(paths, CFG) == ["a.txt", "fin/corpus.jsonl"]
    narrow = IngestConfig(include=("**/*.txt",))
    assert select_paths(paths, narrow) == ["a.txt"]


def test_formats_by_extension():
    assert [file_format(p, CFG) for p in ("a.md", "b.HTM", "c.py", "d.csv", "e.bin")] == [
        "markdown", "html", "code", "csv", None]


def test_text_file_is_one_document_with_stable_id():
    docs, rejects = parse_file("notes/a.txt", b"Hello world.\n", CFG)
    assert rejects == [] and len(docs) == 1
    assert docs[0]["doc_id"] == make_doc_id("notes/a.txt", "")
    assert docs[0]["text"] == "Hello world.\n" and docs[0]["format"] == "text"


def test_csv_records_with_configured_columns():
    data = b'id,title,text,topic\n1,T1,"Body, with comma",x\n2,T2,Second body,y\n'
    docs, rejects = parse_file("t.csv", data, CFG)
    assert rejects == []
    assert [d["record_key"] for d in docs] == ["1", "2"]
    assert docs[0]["title"] == "T1" and docs[0]["text"] == "Body, with comma"
    assert json.loads(docs[1]["metadata"]) == {"topic": "y"}


def test_jsonl_bad_line_rejected_rest_kept():
    data = b'{"id": "a", "body": "first"}\n{"id": "b", body}\n{"id": "c", "body": "third"}\n'
    docs, rejects = parse_file("x.jsonl", data, CFG)
    assert [d["record_key"] for d in docs] == ["a", "c"]
    assert rejects == [{"source": "x.jsonl", "record_key": "row-1",
                        "reason": "line 2: invalid JSON (Expecting property name enclosed in "
                                  "double quotes)"}]


def test_jsonl_line_that_is_not_utf8_is_that_lines_reject():
    """Each JSONL line is decoded on its own: a bad byte costs its line, not the file; a
    U+2028 inside a JSON string is text, not a line break."""
    data = ('{"id": "a", "text": "one\u2028two"}\n'.encode() + b'{"id": "b", "text": "\xff"}\n'
            + b'{"id": "c", "text": "three"}')
    docs, rejects = parse_file("x.jsonl", data, CFG)
    assert [(d["record_key"], d["text"]) for d in docs] == [("a", "one\u2028two"),
                                                            ("c", "three")]
    assert rejects == [{"source": "x.jsonl", "record_key": "row-1",
                        "reason": "line 2: not UTF-8 (invalid start byte at byte 21 of the "
                                  "line)"}]


def test_beir_corpus_format_and_title():
    data = b'{"_id": "d1", "title": "Rain", "text": "Rain falls."}\n'
    docs, _ = parse_file("beir/corpus.jsonl", data, CFG)
    assert docs[0]["format"] == "beir" and docs[0]["title"] == "Rain"


def test_parquet_records():
    buf = io.BytesIO()
    pq.write_table(pa.table({"doc_key": ["k1"], "content": ["Lava flows."], "year": [1883]}), buf)
    docs, rejects = parse_file("v.parquet", buf.getvalue(), CFG)
    assert rejects == [] and docs[0]["record_key"] == "k1"
    assert json.loads(docs[0]["metadata"]) == {"year": 1883}


@pytest.mark.parametrize(("name", "data", "reason"), [
    ("empty.txt", b"", "empty document"),
    ("blank.md", b"  \n\n ", "empty document"),
    ("blob.txt", b"\x00\x01\x02abc", "binary content"),
    ("latin.txt", "café".encode("latin-1"), "not UTF-8 text"),
    ("broken.parquet", b"PAR1 nope", "Parquet"),
    ("image.png", b"\x89PNG", "unsupported file type '.png'"),
    ("nocol.csv", b"a,b\n1,2\n", "no text column"),
])
def test_bad_inputs_rejected_with_reason(name, data, reason):
    docs, rejects = parse_file(name, data, CFG)
    assert docs == []
    assert rejects and reason in rejects[0]["reason"] and rejects[0]["source"] == name


def test_duplicate_record_key_rejected():
    docs, rejects = parse_file("d.csv", b"id,text\n1,aaa\n1,bbb\n", CFG)
    assert len(docs) == 1 and "duplicate record key '1'" in rejects[0]["reason"]


def test_csv_with_a_10_mb_field_keeps_every_row():
    big = "x" * 10_000_000
    data = f"id,text\n1,first row\n2,{big}\n3,last row\n".encode()
    docs, rejects = parse_file("t.csv", data, IngestConfig())
    assert [d["record_key"] for d in docs] == ["1", "2", "3"] and not rejects
    assert len(docs[1]["text"]) == 10_000_000


def test_links_out_of_the_folder_and_bad_names_are_rejects_never_read(tmp_path):
    import os

    from tests.workspace import run_stages

    src, outside = tmp_path / "src", tmp_path / "outside"
    (src / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_text("Outside words that must never be read by ingest.")
    (src / "good.txt").write_text("A normal document about volcanoes and their lava.")
    (src / "linkdir").symlink_to(outside)
    (src / "linkfile.txt").symlink_to(outside / "secret.txt")
    (src / "sub" / "loop").symlink_to("..")
    (src / "sub" / "broken.txt").symlink_to(src / "missing.txt")
    with open(os.fsencode(src) + b"/bad\xffname.txt", "w") as f:
        f.write("Some text in a file whose name is not UTF-8 at all.")
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "params.yaml").write_text(f"ingest:\n  source: {src}\n")
    run_stages(ws, ("ingest",))
    docs = pq.read_table(ws / "data/01_ingest/docs.parquet").to_pylist()
    rejects = {r["source"]: r["reason"] for r in
               pq.read_table(ws / "data/01_ingest/rejects.parquet").to_pylist()}
    assert [d["source"] for d in docs] == ["good.txt"]
    assert "outside ingest.source" in rejects["linkdir"]
    assert "outside ingest.source" in rejects["linkfile.txt"]
    assert "folder" in rejects["sub/loop"] and "broken" in rejects["sub/broken.txt"]
    assert "not valid UTF-8" in rejects["bad\\xffname.txt"]
    assert not any("Outside words" in d["text"] for d in docs)
