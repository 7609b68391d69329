"""BEIR test sets beside a corpus: `queries.jsonl` and `qrels/*.tsv` next to `corpus.jsonl`,
read into query texts and relevance judgements keyed by embedpipe's doc ids."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.core.fingerprint import canonical_json, sha256_file, sha256_text
from tasks.documents.decoding import make_doc_id
from tasks.storage.s3 import is_s3


def find_beir_sets(source: Path) -> list[tuple[str, Path, Path, Path]]:
    """(corpus path relative to source, corpus, queries, qrels) for each BEIR folder."""
    found = []
    for queries in sorted(source.rglob("queries.jsonl")):
        corpus, qrels_dir = queries.with_name("corpus.jsonl"), queries.parent / "qrels"
        qrels = [qrels_dir / n for n in ("test.tsv", "dev.tsv", "train.tsv")
                 if (qrels_dir / n).is_file()]
        if corpus.is_file() and qrels:
            found.append((corpus.relative_to(source).as_posix(), corpus, queries, qrels[0]))
    return found


def labels_digest(source: Path) -> str:
    """One hash over the BEIR queries and qrels files `find_beir_sets` reads under `source`
    (relative path, content sha256): the labels that decide the evaluation."""
    files = sorted({p for _, _, queries, qrels in find_beir_sets(source) for p in (queries, qrels)})
    return sha256_text(canonical_json([(p.relative_to(source).as_posix(), sha256_file(p))
                                       for p in files]))


def source_labels_digest(root: Path, source: str) -> str | None:
    """`labels_digest` of the ingest source `source` (relative to `root`); None on S3, where
    no labels are read."""
    return None if is_s3(source) else labels_digest(root / source)


def read_beir(rel_corpus: str, queries: Path, qrels: Path
              ) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Query texts and qrels keyed by doc_id (as ingest names BEIR documents)."""
    texts = {}
    for n, line in enumerate(queries.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                obj = json.loads(line)
                texts[str(obj["_id"])] = str(obj["text"])
            except (json.JSONDecodeError, KeyError) as err:
                raise ValueError(f"{queries}: line {n}: expected {{'_id', 'text'}} ({err})"
                                 ) from None
    rels: dict[str, dict[str, int]] = {}
    for n, line in enumerate(qrels.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.strip().split("\t")
        if n == 1 and parts[0] == "query-id" or not line.strip():
            continue
        if len(parts) != 3:
            raise ValueError(f"{qrels}: line {n}: expected query-id<TAB>corpus-id<TAB>score")
        if int(parts[2]) > 0 and parts[0] in texts:
            rels.setdefault(parts[0], {})[make_doc_id(rel_corpus, parts[1])] = int(parts[2])
    return {q: t for q, t in texts.items() if q in rels}, rels


def labeled_query_sets(source: Path) -> dict[str, tuple[list[str], list[dict[str, int]]]]:
    """Per BEIR set under `source`: its query texts and each one's relevant documents, in
    query id order."""
    out = {}
    for rel, _, queries, qrels in find_beir_sets(source):
        texts, rels = read_beir(rel, queries, qrels)
        out[rel] = ([texts[q] for q in sorted(texts)], [rels[q] for q in sorted(texts)])
    return out


def pooled_labels(source: Path
                  ) -> tuple[dict[str, str], dict[str, dict[str, int]], list[str]]:
    """Every BEIR set under `source` in one pool: query texts and qrels keyed by
    `<set>:<query id>`, and the sets' corpus paths."""
    texts: dict[str, str] = {}
    rels: dict[str, dict[str, int]] = {}
    sets = find_beir_sets(source)
    for rel, _, queries, qrels in sets:
        t, r = read_beir(rel, queries, qrels)
        texts |= {f"{rel}:{q}": v for q, v in t.items()}
        rels |= {f"{rel}:{q}": v for q, v in r.items()}
    return texts, rels, [rel for rel, *_ in sets]
