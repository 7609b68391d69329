"""Query files for batch search: JSONL with a `query` field per line, or one query per line.

A line that is not what its file promises, or an empty query, is an error naming the line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def parse_query_line(line: str, number: int, where: str, jsonl: bool) -> str:
    """The query on one line of a query file (`number` from 1), or a ValueError naming it."""
    text = line.strip()
    if jsonl:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: line {number}: invalid JSON ({err.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("query"), str):
            raise ValueError(f"{where}: line {number}: expected an object with a string "
                             f"'query' field")
        text = obj["query"].strip()
    if not text:
        raise ValueError(f"{where}: line {number}: empty query")
    return text


def read_queries(path: Path) -> list[str]:
    """Every query of a query file, in order. JSONL when the name ends in .jsonl/.ndjson or
    the first non-blank line starts with '{'; blank lines are skipped."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    first = next((ln.strip() for ln in lines if ln.strip()), "")
    jsonl = Path(path).suffix in (".jsonl", ".ndjson") or first.startswith("{")
    queries = [parse_query_line(ln, i, str(path), jsonl) for i, ln in enumerate(lines, 1)
               if ln.strip()]
    if not queries:
        raise ValueError(f"{path}: no queries")
    return queries


def hit_record(hit: dict[str, Any]) -> dict[str, Any]:
    """The fields of a hit a batch result line carries."""
    keep = ("chunk_id", "doc_id", "source", "score", "members", "duplicate_of")
    return {k: hit[k] for k in keep if k in hit}


def batches(items: list[str], size: int) -> Iterator[list[str]]:
    """`items` in consecutive slices of at most `size`."""
    for start in range(0, len(items), size):
        yield items[start:start + size]
