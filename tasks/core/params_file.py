"""params.yaml edited in place: only the overridden values change.

An override rewrites the value's own characters on its line (its quoting kept for strings,
the comment after it kept at its column); a key the file lacks, or a value written as a block
over several lines, goes through ruamel.yaml's round trip, which keeps comments and key order.
DVC's own `modify_yaml` re-renders the whole file (quote styles, `null`, spacing).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap


def _null(representer: Any, _: None) -> Any:
    return representer.represent_scalar("tag:yaml.org,2002:null", "null")


def _round_trip() -> YAML:
    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 4096
    rt.indent(mapping=2, sequence=4, offset=2)
    rt.representer.add_representer(type(None), _null)
    return rt


def _token_end(line: str, col: int) -> int | None:
    """Where the flow value starting at `col` ends: a quoted string, a bracketed flow
    collection (quotes inside respected), or a plain scalar up to ` #` or the line's end;
    None when there is no value on the line or it goes on past it."""
    depth, quote, i = 0, "", col
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == "\\" and quote == '"':
                i += 1
            elif ch == quote:
                quote = ""
                if depth == 0:
                    return i + 1
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth == 0:
                return i + 1
        elif depth == 0 and (ch == "\n" or line.startswith(" #", i)):
            break
        i += 1
    end = len(line[:i].rstrip(" \t\r\n"))
    return None if depth or quote or end <= col else end


def _render(value: Any, old: str) -> str:
    """`value` as one line of YAML; double quotes where the old token had them."""
    if '"' in old and isinstance(value, str | list | dict):
        return json.dumps(value, ensure_ascii=False)
    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf"),
                          allow_unicode=True)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _replace_inline(text: str, line: int, col: int, value: Any) -> str | None:
    """`text` with the value at (line, col) replaced, or None when it is not one token on
    the key's line."""
    lines = text.splitlines(keepends=True)
    old_line = lines[line]
    end = _token_end(old_line, col)
    if end is None:
        return None
    new = _render(value, old_line[col:end])
    rest = old_line[end:]
    if rest.lstrip(" ").startswith("#"):  # keep the comment at its column when it fits
        gap = len(rest) - len(rest.lstrip(" "))
        rest = " " * max(1, gap - (len(new) - (end - col))) + rest.lstrip(" ")
    lines[line] = old_line[:col] + new + rest
    return "".join(lines)


def _set_one(text: str, keys: list[str], value: Any) -> str:
    rt = _round_trip()
    data = rt.load(text) or CommentedMap()
    node = data
    for key in keys[:-1]:
        if not isinstance(node.get(key), CommentedMap):
            node[key] = CommentedMap()
        node = node[key]
    leaf = keys[-1]
    if leaf in node and getattr(node, "lc", None) is not None:
        line, col = node.lc.value(leaf)
        if line == node.lc.key(leaf)[0] and not text.splitlines()[line][col:].startswith("#"):
            edited = _replace_inline(text, line, col, value)
            if edited is not None:
                return edited
    node[leaf] = value
    out = io.StringIO()
    rt.dump(data, out)
    return out.getvalue()


def write_overrides(path: Path, overrides: dict[str, Any]) -> None:
    """Write already-validated dotted overrides (`{"reduce.pca_dims": 64}`) into params.yaml,
    changing only their values; the file is replaced in one rename."""
    if not overrides:
        return
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    for dotted, value in overrides.items():
        text = _set_one(text, dotted.split("."), value)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@contextmanager
def provisional_overrides(path: Path, overrides: dict[str, Any]) -> Iterator[Callable[[], None]]:
    """Write `overrides` into params.yaml for the block, which calls the yielded `keep()`
    once its first stage starts. A block that fails before then puts the file's bytes back
    as they were, so a run that never got to a stage leaves no bad value behind for every
    later plain run to fail on; from its first stage on, the params are the run's."""
    path = Path(path)
    before = path.read_bytes() if overrides else None
    kept = False

    def keep() -> None:
        nonlocal kept
        kept = True

    write_overrides(path, overrides)
    try:
        yield keep
    except BaseException:
        if before is not None and not kept:
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            tmp.write_bytes(before)
            os.replace(tmp, path)
        raise
