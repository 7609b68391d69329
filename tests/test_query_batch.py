"""Query files for batch search: each bad line is its own error, naming the file, the line
and what was expected; the good lines keep their queries."""

from __future__ import annotations

import pytest

from tasks.query.batch import QueryLine, read_query_lines


def test_each_bad_line_is_its_own_error_and_the_rest_are_kept(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_bytes(
        b'{"query": "neutron star"}\n{not json\n\n{"query": "caf\xe9"}\n'
        b'{"q": "x"}\n{"query": "  "}\n{"query": "sourdough"}\r\n'
    )
    lines = read_query_lines(path)
    assert [(q.number, q.query) for q in lines] == [
        (1, "neutron star"),
        (2, None),
        (4, None),
        (5, None),
        (6, None),
        (7, "sourdough"),
    ]
    errors = {q.number: q.error for q in lines if q.error}
    assert all(e.startswith(f"{path}: line {n}: ") for n, e in errors.items())
    assert "invalid JSON" in errors[2]
    assert "not valid UTF-8 (byte 0xe9 at column 15)" in errors[4]
    assert "string 'query' field" in errors[5] and "empty query" in errors[6]


def test_plain_lines_and_unreadable_files(tmp_path):
    path = tmp_path / "q.txt"
    path.write_bytes(b"libfoo\n\xff\xfe bad\nneutron star\n")
    assert read_query_lines(path)[0] == QueryLine(1, "libfoo")
    assert "line 2: not valid UTF-8" in read_query_lines(path)[1].error
    with pytest.raises(ValueError, match="cannot read the query file"):
        read_query_lines(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(ValueError, match="no queries"):
        read_query_lines(tmp_path / "empty.txt")
