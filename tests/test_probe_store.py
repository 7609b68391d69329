"""The search choice's probes as encode drew them, kept for the index stage: the index takes
the same probes whether they come from the store, partly or wholly, or are drawn again."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import pyarrow as pa

from tasks.core.catalog import CHUNKS
from tasks.core.config import load_params
from tasks.core.io import read_manifest, read_table
from tasks.query.probe_drawing import DRAWN, drawing, drawn_probes
from tasks.query.probe_store import keep_probes, kept_probes, probes_for_choice, probes_key

WORDS = "alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega".split()


def _chunks(docs: int = 40) -> pa.Table:
    rows = []
    for d in range(docs):
        for c in range(3):
            words = [WORDS[(d * 7 + c * 3 + i) % len(WORDS)] for i in range(12)]
            rows.append({"chunk_id": f"d{d}-c{c}", "doc_id": f"d{d}",
                         "title": f"Title of document {d}",
                         "text": f"Why does {' '.join(words[:6])} work? "
                                 f"{' '.join(words).capitalize()} is used here {d}.",
                         "context": None})
    return pa.Table.from_pylist(rows)


def _read_never() -> pa.Table:
    raise AssertionError("the chunk table was read, though the store held every probe")


def test_the_store_gives_the_probes_drawing_gives(tmp_path):
    chunks, seed = _chunks(), 3
    everything = list(drawn_probes(chunks, seed))
    assert len(everything) == 40
    # none kept: drawn from the table
    assert list(probes_for_choice(tmp_path, "k0", lambda: chunks, seed)) == everything
    # the first 10 kept: the rest drawn on from the state after them, the same sequence
    first = list(islice(drawing(chunks, seed), 10))
    keep_probes(tmp_path, "k1", [p for p, _ in first], first[-1][1])
    assert list(probes_for_choice(tmp_path, "k1", lambda: chunks, seed)) == everything
    # all kept: the table is never read
    keep_probes(tmp_path, "k2", everything, None)
    assert list(probes_for_choice(tmp_path, "k2", _read_never, seed)) == everything
    # a file whose bytes are not those its name says is not used
    path = next((tmp_path / "probes").glob("k2-*.parquet"))
    path.write_bytes(path.read_bytes()[:-20] + b"\0" * 20)
    assert kept_probes(tmp_path, "k2") == ([], None, False)
    assert list(probes_for_choice(tmp_path, "k2", lambda: chunks, seed)) == everything


def test_the_store_keeps_its_newest_files(tmp_path):
    probes = list(islice(drawn_probes(_chunks(), 0), 5))
    for i in range(7):
        keep_probes(tmp_path, f"key{i}", probes, None)
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "probes").glob("*.parquet")) == [
        "key3", "key4", "key5", "key6"]


def test_encode_keeps_the_probes_the_index_chooses_on(sample_run: Path):
    """In the session's sample run, the probes encode kept are the first the chunk table
    draws, under the key the index stage looks for."""
    params = load_params(sample_run / "params.yaml")
    chunk_dir = sample_run / "data/03_chunk"
    manifest = read_manifest(chunk_dir, "chunk")
    key = probes_key(manifest, params.index.seed)
    kept, _, complete = kept_probes(sample_run / params.paths.vector_cache, key)
    table = read_table(chunk_dir, CHUNKS, manifest, list(DRAWN))
    assert kept and kept == list(islice(drawn_probes(table, params.index.seed), len(kept)))
    assert complete == (len(kept) < 3 * params.search.probes)
    card = json.loads((sample_run / "data/07_index/card.json").read_text())
    assert card["search_choice"]["probes"] <= len(kept)
