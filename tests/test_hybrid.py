"""Search quality where dedup and dense search fail on technical text: families of documents
that share boilerplate, and made-up identifiers (benchmarks/families.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from benchmarks.families import generate
from tests.workspace import REPO, env_with_venv, run_stages

BUILD = ("ingest", "clean", "chunk", "finetune", "encode", "reduce", "dedup", "index")


def build(ws: Path, corpus: Path, cache: Path) -> None:
    from tasks.core.params_file import write_overrides

    ws.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "params.yaml", ws / "params.yaml")
    write_overrides(ws / "params.yaml", {"ingest.source": str(corpus), "encode.device": "cpu",
                                         "paths.vector_cache": str(cache)})
    run_stages(ws, BUILD)


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    base = tmp_path_factory.mktemp("families")
    generate(base, n_families=10, n_filler=30, sample_dir=REPO / "data/sample", seed=3)
    build(base / "ws", base / "corpus", base / "cache")
    queries = [json.loads(line) for line in (base / "queries.jsonl").read_text().splitlines()]
    return base, queries


def folder_of(ws: Path):
    from tasks.query.search import load_index_folder

    return load_index_folder(ws / "data/07_index")


def reached(hits: list[dict]) -> set[str]:
    """Sources a ranked list reaches: its hits and their duplicate-group members."""
    return {h["source"] for h in hits} | {m["source"] for h in hits for m in h.get("members", [])}


def every_chunk_once(ws: Path) -> None:
    chunks = pq.read_table(ws / "data/03_chunk/chunks.parquet").column("chunk_id").to_pylist()
    indexed = pq.read_table(ws / "data/07_index/chunks.parquet").column("chunk_id").to_pylist()
    members = pq.read_table(ws / "data/07_index/members.parquet")
    grouped = members.column("chunk_id").to_pylist()
    assert sorted(indexed + grouped) == sorted(chunks)  # none lost, none twice
    assert set(members.column("group_chunk_id").to_pylist()) <= set(indexed)


def test_dedup_collapses_families_and_loses_no_chunk(families):
    base, _ = families
    dropped = pq.read_table(base / "ws/data/06_dedup/dropped.parquet")
    assert dropped.num_rows >= 10  # the shared sections collapsed
    every_chunk_once(base / "ws")


def family(source: str) -> str:
    return source.split("/", 1)[0]


def test_expansion_returns_every_member_dedup_dropped(families):
    """A query that reaches its target's family reaches its target: dedup costs nothing."""
    base, queries = families
    shared = [q for q in queries if q["kind"] == "shared"]
    folder = folder_of(base / "ws")
    texts = [q["query"] for q in shared]
    for mode in ("dense", "lexical", "hybrid"):
        grouped = folder.search_text(texts, k=10, mode=mode, expand="group")
        for q, hits in zip(shared, grouped, strict=True):
            if family(q["source"]) in {family(s) for s in reached(hits)}:
                assert q["source"] in reached(hits), (mode, q)
    hybrid = folder.search_text(texts, k=10, expand="group")
    assert all(q["source"] in reached(h) for q, h in zip(shared, hybrid, strict=True))
    plain = folder.search_text(texts, k=10, expand="off")
    lost = sum(q["source"] not in reached(h) for q, h in zip(shared, plain, strict=True))
    assert lost > 0  # without expansion dedup does cost targets: the failure is in the corpus


def test_rows_expansion_lists_members_after_their_hit(families):
    base, queries = families
    folder = folder_of(base / "ws")
    hits = folder.search_text([queries[0]["query"]], k=10, expand="rows")[0]
    assert len(hits) <= 10 and any("duplicate_of" in h for h in hits)
    for i, h in enumerate(hits):
        if "duplicate_of" in h:
            assert h["duplicate_of"] in {x["chunk_id"] for x in hits[:i]}


def test_hybrid_finds_identifiers_dense_misses(families):
    base, queries = families
    ident = [q for q in queries if q["kind"] == "identifier"]
    folder = folder_of(base / "ws")

    def hit_at(mode: str, k: int) -> float:
        found = folder.search_text([q["query"] for q in ident], k=k, mode=mode)
        return sum(q["source"] in reached(h) for q, h in zip(ident, found, strict=True)) / len(
            ident)

    assert hit_at("hybrid", 10) == 1.0
    assert hit_at("lexical", 1) >= 0.9
    assert hit_at("hybrid", 3) > hit_at("dense", 3)


def test_modes_are_deterministic(families):
    base, queries = families
    texts = [q["query"] for q in queries[:40]]
    for mode in ("dense", "lexical", "hybrid"):
        a = folder_of(base / "ws").rank(texts, 10, mode)
        b = folder_of(base / "ws").rank(texts, 10, mode)
        assert (a[1] == b[1]).all() and (a[0] == b[0]).all(), mode


def test_stopword_only_query_falls_back_to_dense(families):
    base, _ = families
    folder = folder_of(base / "ws")
    lexical = folder.search_text(["the of and to"], k=3, mode="lexical")[0]
    dense = folder.search_text(["the of and to"], k=3, mode="dense")[0]
    assert [h["chunk_id"] for h in lexical] == [h["chunk_id"] for h in dense] and dense


def embedpipe(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "embedpipe"), *args], cwd=cwd,
                          env=env_with_venv(), capture_output=True, text=True, timeout=300,
                          check=False)


def test_batch_search_one_line_per_query_in_order(families, tmp_path):
    base, queries = families
    index = str(base / "ws/data/07_index")
    (tmp_path / "q.jsonl").write_text("".join(json.dumps({"query": q["query"]}) + "\n"
                                              for q in queries[:25]))
    proc = embedpipe("search", "--queries", str(tmp_path / "q.jsonl"), "-k", "10", "--format",
                     "jsonl", "--index", index, cwd=base)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["query"] for r in lines] == [q["query"] for q in queries[:25]]
    assert all(len(r["hits"]) == 10 and {"chunk_id", "doc_id", "source", "score", "members"}
               <= set(r["hits"][0]) for r in lines)
    (tmp_path / "plain.txt").write_text("libfoo\n\n  \nneutron star\n")
    proc = embedpipe("search", "--queries", str(tmp_path / "plain.txt"), "--index", index,
                     "--format", "jsonl", cwd=base)
    assert [json.loads(x)["query"] for x in proc.stdout.splitlines()] == ["libfoo",
                                                                          "neutron star"]


@pytest.mark.parametrize(("content", "message"), [
    ('{"query": "a"}\n{"query": ""}\n', "line 2: empty query"),
    ('{"query": "a"}\n{"q": "b"}\n', "line 2: expected an object with a string 'query'"),
    ('{"query": "a"}\n{not json\n', "line 2: invalid JSON"),
])
def test_batch_search_bad_line_is_named(families, tmp_path, content, message):
    base, _ = families
    (tmp_path / "q.jsonl").write_text(content)
    proc = embedpipe("search", "--queries", str(tmp_path / "q.jsonl"), "--index",
                     str(base / "ws/data/07_index"), cwd=base)
    assert proc.returncode == 2 and message in proc.stderr and "q.jsonl" in proc.stderr


def test_batch_search_bad_lines_are_named_and_good_lines_answered(families, tmp_path):
    """On main one bad line refused the whole file, and invalid UTF-8 named neither the
    file nor the line."""
    base, _ = families
    path = tmp_path / "q.jsonl"
    path.write_bytes(b'{"query": "libfoo"}\n{not json\n{"query": "caf\xe9"}\n'
                     b'{"query": "neutron star"}\n')
    for level in ("chunk", "doc"):
        proc = subprocess.run([str(Path(sys.executable).parent / "embedpipe"), "search",
                               "--queries", str(path), "--index", str(base / "ws/data/07_index"),
                               "--level", level], cwd=base, env=env_with_venv(),
                              capture_output=True, timeout=300, check=False)
        out = [json.loads(line) for line in proc.stdout.decode().splitlines()]
        assert proc.returncode == 2, proc.stderr
        assert [r["line"] for r in out] == [1, 2, 3, 4]
        assert [r.get("query") for r in out] == ["libfoo", None, None, "neutron star"]
        assert out[0]["hits"] and out[3]["hits"]
        assert f"{path}: line 2: invalid JSON" in out[1]["error"]
        stderr = proc.stderr.decode()
        assert f"{path}: line 3: not valid UTF-8" in stderr and "2 of 4 query lines" in stderr


def test_deleting_a_kept_member_hands_its_group_to_another(families, tmp_path):
    base, _ = families
    corpus = tmp_path / "corpus"
    shutil.copytree(base / "corpus", corpus)
    ws = tmp_path / "ws"
    shutil.copytree(base / "ws", ws)
    build(ws, corpus, base / "cache")
    members = pq.read_table(ws / "data/07_index/members.parquet").to_pylist()
    chunks = pq.read_table(ws / "data/07_index/chunks.parquet").to_pylist()
    source_of = {c["chunk_id"]: c["source"] for c in chunks}
    group = next(m for m in members if m["kind"] == "exact")
    kept_source, twin_source = source_of[group["group_chunk_id"]], group["source"]
    (corpus / kept_source).unlink()
    build(ws, corpus, base / "cache")
    every_chunk_once(ws)
    now = {c["source"] for c in pq.read_table(ws / "data/07_index/chunks.parquet").to_pylist()}
    gone = pq.read_table(ws / "data/07_index/members.parquet").column("source").to_pylist()
    assert kept_source not in now and kept_source not in gone
    assert twin_source in now  # a remaining member took the group's place
    folder = folder_of(ws)
    assert json.loads((ws / "data/07_index/card.json").read_text())["update"] == "rebuild"
    assert folder.index.ntotal == len(now_chunks := folder.chunks.column("chunk_id")) and len(
        set(now_chunks.to_pylist())) == folder.index.ntotal
