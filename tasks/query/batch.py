"""Query files for batch search: JSONL with a `query` field per line, or one query per line.

A line that is not what its file promises (not UTF-8, not JSON, no string `query`, empty) is
that line's error, naming the file, the line and what was expected; the other lines are
still answered.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

T = TypeVar("T")


class QueryLine(NamedTuple):
    """One non-blank line of a query file: its query, or why it has none."""

    number: int  # from 1, as an editor shows it
    query: str | None
    error: str | None = None


def parse_query_line(line: str, number: int, where: str, jsonl: bool) -> str:
    """The query on one line of a query file (`number` from 1), or a ValueError naming it."""
    text = line.strip()
    if jsonl:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: line {number}: invalid JSON ({err.msg}); expected "
                             '{"query": "..."}') from None
        if not isinstance(obj, dict) or not isinstance(obj.get("query"), str):
            raise ValueError(f"{where}: line {number}: expected an object with a string "
                             f"'query' field")
        text = obj["query"].strip()
    if not text:
        raise ValueError(f"{where}: line {number}: empty query")
    return text


def _decoded(raw: bytes, number: int, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{where}: line {number}: not valid UTF-8 (byte "
                         f"0x{raw[err.start]:02x} at column {err.start + 1}); expected UTF-8 "
                         "text") from None


def _one_line(raw: bytes, number: int, where: str, jsonl: bool) -> QueryLine:
    try:
        return QueryLine(number, parse_query_line(_decoded(raw, number, where), number, where,
                                                  jsonl))
    except ValueError as err:
        return QueryLine(number, None, str(err))


def read_query_lines(path: Path) -> list[QueryLine]:
    """Every non-blank line of a query file, in order, each with its query or its error.
    JSONL when the name ends in .jsonl/.ndjson or the first non-blank line starts with '{'.

    Raises:
        ValueError: the file cannot be read, or holds no line at all.
    """
    try:
        lines = Path(path).read_bytes().splitlines()
    except OSError as err:
        raise ValueError(f"{path}: cannot read the query file ({err.strerror})") from None
    first = next((ln.strip() for ln in lines if ln.strip()), b"")
    jsonl = Path(path).suffix in (".jsonl", ".ndjson") or first.startswith(b"{")
    out = [_one_line(ln, i, str(path), jsonl) for i, ln in enumerate(lines, 1) if ln.strip()]
    if not out:
        raise ValueError(f"{path}: no queries")
    return out


def hit_record(hit: dict[str, Any]) -> dict[str, Any]:
    """The fields of a hit a batch result line carries."""
    keep = ("chunk_id", "doc_id", "source", "score", "members", "duplicate_of")
    return {k: hit[k] for k in keep if k in hit}


def batches(items: list[T], size: int) -> Iterator[list[T]]:
    """`items` in consecutive slices of at most `size`."""
    for start in range(0, len(items), size):
        yield items[start:start + size]
