"""Document vectors (`index.doc_vectors`) and `embedpipe search --level doc` on the sample
corpus, with the real packaged model and real FAISS."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tasks.core.vectors import arrow_to_vectors
from tests.workspace import copy_workspace, env_with_venv, run_stages

UP_TO_INDEX = ("ingest", "clean", "chunk", "finetune", "encode", "reduce", "dedup", "index")


@pytest.fixture(scope="module")
def built(sample_run, tmp_path_factory):
    return copy_workspace(sample_run, tmp_path_factory.mktemp("docs") / "ws", through="index")


def expected(ws: Path, weighted: bool) -> dict[str, np.ndarray]:
    """Each document's unit mean of its chunks' vectors, recomputed from dedup's tables: a
    dropped chunk counts with the vector of the kept chunk standing for its group."""
    kept = pq.read_table(ws / "data/06_dedup/vectors.parquet")
    dropped = pq.read_table(ws / "data/06_dedup/dropped.parquet").to_pylist()
    tokens = dict(zip(*pq.read_table(ws / "data/03_chunk/chunks.parquet",
                                     columns=["chunk_id", "n_tokens"]).to_pydict().values(),
                      strict=True))
    x = arrow_to_vectors(kept.column("vector"))
    vec = dict(zip(kept.column("chunk_id").to_pylist(), x, strict=True))
    members = [(c, d, vec[c]) for c, d in zip(kept.column("chunk_id").to_pylist(),
                                               kept.column("doc_id").to_pylist(), strict=True)]
    members += [(r["dropped_chunk_id"], r["doc_id"], vec[r["group_chunk_id"]]) for r in dropped]
    sums: dict[str, np.ndarray] = {}
    for chunk, doc, v in members:
        sums[doc] = sums.get(doc, 0) + v.astype("float64") * (tokens[chunk] if weighted else 1)
    return {d: s / np.linalg.norm(s) for d, s in sums.items()}


def written(ws: Path) -> dict[str, np.ndarray]:
    docs = pq.read_table(ws / "data/07_index/docs.parquet")
    return dict(zip(docs.column("doc_id").to_pylist(), arrow_to_vectors(docs.column("vector")),
                    strict=True))


def test_document_vector_is_the_unit_mean_of_all_its_chunks(built):
    got, want = written(built), expected(built, weighted=False)
    chunk_docs = set(pq.read_table(built / "data/03_chunk/chunks.parquet",
                                   columns=["doc_id"]).column("doc_id").to_pylist())
    assert set(got) == set(want) == chunk_docs  # dedup loses no document
    assert max(float(np.abs(got[d] - want[d]).max()) for d in got) < 1e-5
    manifest = json.loads((built / "data/07_index/_manifest.json").read_text())
    assert manifest["rows"]["documents"] == len(got)


def test_search_level_doc_returns_documents_for_a_topic(built):
    done = subprocess.run([str(Path(sys.executable).parent / "embedpipe"), "--root",
                           str(built), "search", "how a collapsed star becomes a neutron star",
                           "--level", "doc", "-k", "3", "--format", "jsonl"],
                          env=env_with_venv(), capture_output=True, text=True, check=True)
    hits = json.loads(done.stdout)["hits"]
    assert len(hits) == 3 and len({h["doc_id"] for h in hits}) == 3
    assert hits[0]["source"].startswith("astronomy/") and hits[0]["n_chunks"] >= 1
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]


def test_token_weighted_document_vectors(built, tmp_path):
    from tasks.core.params_file import write_overrides

    write_overrides(built / "params.yaml", {"index.doc_vectors": "token_mean"})
    try:
        run_stages(built, ("index",))
        got, want = written(built), expected(built, weighted=True)
        assert max(float(np.abs(got[d] - want[d]).max()) for d in got) < 1e-5
        plain = expected(built, weighted=False)
        assert any(float(np.abs(got[d] - plain[d]).max()) > 1e-4 for d in got)
    finally:
        write_overrides(built / "params.yaml", {"index.doc_vectors": "mean"})


def test_sentences_and_the_tokenizer_load_without_torch():
    """A CPU build never runs torch: spaCy (through thinc) and AutoTokenizer used to import
    it anyway, 230 MB of RSS in every chunk and encode process."""
    from tests.conftest import REPO

    code = ("import sys\n"
            "from tasks.core.config import EncodeConfig\n"
            "from tasks.documents.sentences import sentence_starts, sentencizer\n"
            "from tasks.encoders.model import load_tokenizer\n"
            "tok = load_tokenizer(EncodeConfig().model)\n"
            "assert [s.text for s in sentencizer()('One here. Two there.').sents] == "
            "['One here.', 'Two there.']\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "assert tok('a b')['input_ids'][0] == tok.cls_token_id\n"
            "import torch\n"  # and it still imports when a stage does need it
            "print(type(tok).__name__)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env_with_venv(),
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    # read from tokenizer.json alone (tests/test_fast_tokenizer.py: the same as transformers')
    assert done.stdout.split()[-1] == "BackendTokenizer"


def test_document_vectors_summed_in_blocks_are_the_same_bytes(monkeypatch):
    import pyarrow as pa

    import tasks.query.documents as docs_mod

    rng = np.random.default_rng(0)
    n, m, d = 3000, 400, 32
    x = rng.normal(size=(n, d)).astype("float32")
    kept = pa.table({"chunk_id": [f"c{i}" for i in range(n)],
                     "doc_id": [f"d{rng.integers(500)}" for _ in range(n)],
                     "source": ["s"] * n, "title": [None] * n})
    dropped = pa.table({"dropped_chunk_id": [f"x{i}" for i in range(m)],
                        "doc_id": [f"d{rng.integers(500)}" for _ in range(m)],
                        "source": ["s"] * m,
                        "group_chunk_id": [f"c{rng.integers(n)}" for _ in range(m)]})
    tokens = {c: int(rng.integers(5, 200)) for c in [f"c{i}" for i in range(n)]
              + [f"x{i}" for i in range(m)]}
    whole = docs_mod.document_vectors(kept, x, dropped, tokens)[1]
    monkeypatch.setattr(docs_mod, "BLOCK_ROWS", 256)
    assert docs_mod.document_vectors(kept, x, dropped, tokens)[1].tobytes() == whole.tobytes()
