"""The user's own pairs (`finetune.pairs`): a JSONL of {query, positive}, or a BEIR folder
whose corpus was ingested (its training qrels: `qrels/train.tsv`, else `dev.tsv`; never
`test.tsv`, which evaluate scores). Labels outrank probes at the gate: a BEIR query about a
held-out document, and a `finetune.holdout` share of the JSONL pairs, are gate queries and
never trained on."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from tasks.evaluation.beir import read_beir
from tasks.tuning.gate import Labeled
from tasks.tuning.pairs import PAIRS_SCHEMA, held_out

TRAIN_QRELS = ("train.tsv", "dev.tsv")


def read_jsonl_pairs(path: Path, share: float = 0.0, seed: int = 0
                     ) -> tuple[pa.Table, Labeled | None]:
    """(pairs of kind `user` to train on, the held-out ones as labelled gate queries): a
    seeded hash of each pair's text holds a `share` of them out (so a pair keeps its side as
    the file grows); a held-out positive is a document of its own in the gate's corpus."""
    rows, held = [], Labeled({}, {}, {})
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            query, positive = str(obj["query"]), str(obj["positive"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"finetune.pairs: {path}: line {n}: expected a JSON object with "
                             f"'query' and 'positive' ({type(err).__name__}: {err})") from None
        if held_out(f"{query}\n{positive}", share, seed):
            qid, doc = f"pair-{n}", f"pair-{n}-positive"
            held.queries[qid], held.qrels[qid], held.docs[doc] = query, {doc: 1}, positive
            continue
        rows.append({"anchor": query, "positive": positive, "kind": "user", "doc_id": "",
                     "chunk_id": ""})
    return pa.Table.from_pylist(rows, schema=PAIRS_SCHEMA), held if held.queries else None


def read_beir_pairs(folder: Path, source: Path, chunks: pa.Table, held: set[str]
                    ) -> tuple[pa.Table, Labeled]:
    """(training pairs of kind `labeled`: a query -> the first chunk of each relevant
    training document, (queries, qrels) of the held-out documents for the gate)."""
    qrels_file = next((folder / "qrels" / n for n in TRAIN_QRELS
                       if (folder / "qrels" / n).is_file()), None)
    corpus = folder / "corpus.jsonl"
    if qrels_file is None or not (folder / "queries.jsonl").is_file() or not corpus.is_file():
        raise ValueError(f"finetune.pairs: {folder}: a BEIR folder needs corpus.jsonl, "
                         f"queries.jsonl and qrels/train.tsv or qrels/dev.tsv")
    try:
        rel = corpus.resolve().relative_to(source.resolve()).as_posix()
    except ValueError:
        raise ValueError(f"finetune.pairs: {corpus} is not under ingest.source {source}; its "
                         "documents must be the ingested ones") from None
    texts, rels = read_beir(rel, folder / "queries.jsonl", qrels_file)
    first: dict[str, tuple[str, str]] = {}
    for r in chunks.select(["chunk_id", "doc_id", "text"]).to_pylist():
        first.setdefault(r["doc_id"], (r["chunk_id"], r["text"] or ""))
    rows, gate_rels = [], {}
    for qid, docs in rels.items():
        if set(docs) & held:  # a query about a held-out document is the gate's
            gate_rels[qid] = {d: g for d, g in docs.items() if d in held}
            continue
        rows += [{"anchor": texts[qid], "positive": first[d][1], "kind": "labeled",
                  "doc_id": d, "chunk_id": first[d][0]} for d in sorted(docs) if d in first]
    return (pa.Table.from_pylist(rows, schema=PAIRS_SCHEMA),
            Labeled({q: texts[q] for q in gate_rels}, gate_rels))


def read_user_pairs(path: Path, source: Path, chunks: pa.Table, held: set[str],
                    share: float, seed: int) -> tuple[pa.Table, Labeled | None]:
    """The pairs at `path` (JSONL file or BEIR folder) to train on, and the gate's labelled
    queries: a BEIR query about a held-out document, a `share` of the JSONL pairs."""
    if path.is_dir():
        return read_beir_pairs(path, source, chunks, held)
    if not path.is_file():
        raise ValueError(f"finetune.pairs: {path} is neither a JSONL file nor a BEIR folder")
    return read_jsonl_pairs(path, share, seed)
