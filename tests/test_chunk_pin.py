"""The chunk table pinned: the sample corpus (plus documents that take the rarer paths) chunked
under each strategy must give exactly the rows in `tests/pinned/chunks.tsv` (chunk ids,
offsets, token counts), so a faster chunker cannot change what it cuts.

Rewrite the pin only for an intended change of output: `python -m tests.test_chunk_pin`.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PIN = Path(__file__).parent / "pinned" / "chunks.tsv"
STRATEGIES = ("sentence", "recursive", "sliding_window")
FIELDS = ("chunk_id", "char_start", "char_end", "n_tokens")
# Texts on paths the sample rarely takes: a sentence over the budget, a table over it, code,
# CJK and accents (the tokenizer splits them apart), quotes after a full stop, no spaces.
EXTRA = {
    "long-sentence": "word and another " * 120 + "end.",
    "long-table": "\n".join(f"| row {i} | value {i * 7} | note about row {i} |"
                            for i in range(90)),
    "code": "def f(x):\n    return x + 1\n\n\nclass A:\n    pass\n" * 20,
    "cjk-accents": ("東京は日本の首都です。人口は多い。Café naïve résumé coöperate. " * 40),
    "quotes": ('He said "stop." Then left.\n"Why?" she asked... (Nobody knew.) U.S. policy, '
               "e.g. this one, changed in 3.5 years!She ran.Next day:" * 30),
    "no-spaces": "x" * 3000 + "." + "y" * 2000,
}


def sample_clean_docs(ws: Path) -> pa.Table:
    """The sample corpus as clean wrote it in the built workspace `ws`, plus the EXTRA
    documents."""
    docs = pq.read_table(ws / "data/02_clean/docs.parquet",
                         columns=["doc_id", "source", "format", "title", "text"])
    n = len(EXTRA)
    extra = pa.table({"doc_id": list(EXTRA), "source": ["extra"] * n,
                      "format": ["code" if k == "code" else "text" for k in EXTRA],
                      "title": pa.nulls(n, pa.string()), "text": list(EXTRA.values())},
                     schema=docs.schema)
    return pa.concat_tables([docs, extra])


def chunk_rows(docs: pa.Table, tokenizer) -> list[str]:
    from tasks.chunk import chunk_documents
    from tasks.core.config import ChunkConfig

    lines = []
    for strategy in STRATEGIES:
        table = chunk_documents(docs, ChunkConfig(strategy=strategy), 200, tokenizer)
        lines += ["\t".join([strategy, *(str(row[f]) for f in FIELDS)])
                  for row in table.select(list(FIELDS)).to_pylist()]
    return lines


def test_chunk_table_is_the_pinned_one(sample_run, tokenizer):
    got = chunk_rows(sample_clean_docs(sample_run), tokenizer)
    want = PIN.read_text().splitlines()
    assert len(got) == len(want)
    diff = [(w, g) for w, g in zip(want, got, strict=True) if w != g]
    assert not diff, f"{len(diff)} rows differ from the pin, first: {diff[:3]}"


if __name__ == "__main__":
    import tempfile

    from tasks.core.config import DEFAULT_MODEL
    from tasks.encoders.model import load_tokenizer
    from tests.workspace import make_workspace, run_stages

    with tempfile.TemporaryDirectory() as tmp:
        ws = make_workspace(Path(tmp) / "ws")
        run_stages(ws, ["ingest", "clean"])
        rows = chunk_rows(sample_clean_docs(ws), load_tokenizer(DEFAULT_MODEL))
    PIN.parent.mkdir(exist_ok=True)
    PIN.write_text("\n".join(rows) + "\n")
    print(f"{PIN}: {len(rows)} rows")  # noqa: T201
