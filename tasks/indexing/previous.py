"""The previous index folder of a stage output: reused (updated in place) or not, and why.

A previous index is updated only if its manifest's checksums hold, it keeps its lists in
memory (an on-disk index is rebuilt) and its rows carry vector keys; otherwise the reason
goes into the plan and the card.
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from tasks.core.catalog import INDEX, INDEX_CHUNKS, INDEX_IVFDATA
from tasks.core.config import IndexConfig
from tasks.core.io import check_file, previous_keys, read_manifest
from tasks.core.progress import task_logger
from tasks.indexing.build import Fill
from tasks.indexing.updates import BuiltIndex, IndexPlan, apply_plan, plan_update

ON_DISK_REBUILT = ("the previous index keeps its lists on disk (index.ivfdata): an on-disk "
                   "index is rebuilt, never updated in place")


def previous_index(out_dir: Path) -> tuple[dict | None, faiss.Index | None, dict[int, str], str]:
    """The previous index folder's manifest, index and id -> vector hash (if readable and
    its files' checksums match its manifest: a damaged one is rebuilt, never updated; an
    index with its lists on disk is rebuilt), and why none is reused ("" when one is)."""
    try:
        manifest = read_manifest(out_dir, "index")
        for entry in (INDEX, INDEX_CHUNKS):
            check_file(out_dir / entry.name, manifest)
    except ValueError as err:
        if out_dir.is_dir():
            task_logger().warning("index: previous index not reused, rebuilt (%s)", err)
            return None, None, {}, f"the previous index is not reusable ({err})"
        return None, None, {}, "no previous index"
    if (out_dir / INDEX_IVFDATA.name).exists():
        return None, None, {}, ON_DISK_REBUILT
    keys = previous_keys(out_dir, INDEX_CHUNKS, "int_id", "vector_sha256")
    if keys is None:
        return None, None, {}, "the previous index has no vector keys (an older layout)"
    try:
        index = faiss.read_index(str(out_dir / INDEX.name))
    except RuntimeError as err:
        return None, None, {}, f"the previous index file does not read ({err})"
    return manifest, index, keys, ""


def update_or_build(out_dir: Path, rows: tuple[np.ndarray, np.ndarray, list[str]], space: str,
                    cfg: IndexConfig, fill: Fill) -> tuple[BuiltIndex, IndexPlan]:
    """Plan against the previous index folder in `out_dir` (`plan_update`) and carry the plan
    out (`apply_plan`); `rows` are (vectors, FAISS ids, vector keys)."""
    x, int_ids, keys = rows
    prev, prev_index, prev_keys, why_not = previous_index(out_dir)
    plan = plan_update(prev, prev_keys, int_ids, keys, space, cfg, why_not or None)
    return apply_plan(plan, prev, prev_index, x, int_ids, cfg, fill), plan
