"""The params that name places on disk, checked against the workspace before a run writes.

Pydantic checks a value's form; whether a folder exists, or where a relative path lands,
depends on the workspace, so it is checked here, once the workspace is known: a
`--set ingest.source=/nonexistent` fails before params.yaml or any output changes, and a
relative target never writes outside the workspace.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tasks.storage.s3 import is_s3

MUST_EXIST = ("ingest.source",)  # read by the run: a local one must be a folder now
INSIDE_UNLESS_ABSOLUTE = (  # written by the run: relative ones stay in the workspace
    "paths.data",
    "paths.runs",
    "paths.vector_cache",
    "publish.target",
    "export.lancedb.uri",
)


def _value(params: Any, dotted: str) -> Any:
    node = params
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def _missing_source(key: str, value: str, root: Path) -> str | None:
    folder = root / value
    if folder.is_dir():
        return None
    what = "is not a folder" if folder.exists() else "does not exist"
    where = "" if Path(value).is_absolute() else f" (relative to the workspace {root})"
    return (
        f"{key}: {value!r} {what}{where}; expected a local folder of documents or "
        "s3://bucket/prefix"
    )


def _escapes(key: str, value: str, root: Path) -> str | None:
    # Lexical, not resolved: a link the user placed inside the workspace is theirs to keep.
    if Path(value).is_absolute() or Path(os.path.normpath(value)).parts[:1] != ("..",):
        return None
    return (
        f"{key}: {value!r} leads outside the workspace {root}; a relative path must stay "
        "inside it (give an absolute path to write elsewhere)"
    )


def location_problems(params: Any, root: Path) -> list[str]:
    """What is wrong with the params that name places (`Params` of the workspace `root`):
    one line per key, naming the key, its value and what was expected; empty when all fit."""
    problems = []
    for keys, check in ((MUST_EXIST, _missing_source), (INSIDE_UNLESS_ABSOLUTE, _escapes)):
        for key in keys:
            value = _value(params, key)
            if value is None or is_s3(str(value)):
                continue
            problem = check(key, str(value), Path(root))
            if problem is not None:
                problems.append(problem)
    return problems


def check_locations(params: Any, root: Path) -> None:
    """Raise ValueError naming every params key whose place does not fit (`location_problems`)."""
    problems = location_problems(params, root)
    if problems:
        raise ValueError("\n".join(problems))
