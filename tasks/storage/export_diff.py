"""What an export changes in a store: rows matched on `chunk_id`, compared by `row_hash`."""

from __future__ import annotations

from typing import NamedTuple

import pyarrow as pa


class Diff(NamedTuple):
    """Positions in the exported rows to write, chunk ids to delete, and the counts."""

    changed: list[int]
    removed: list[str]
    counts: dict[str, int]


def diff(old: dict[str, str], rows: pa.Table) -> Diff:
    """Against what a store holds (chunk_id -> row_hash): rows it lacks or holds with another
    hash, ids it holds that the export no longer does; inserted, updated, deleted, unchanged."""
    ids, hashes = rows.column("chunk_id").to_pylist(), rows.column("row_hash").to_pylist()
    changed = [i for i, (c, h) in enumerate(zip(ids, hashes, strict=True)) if old.get(c) != h]
    keep = set(ids)
    removed = sorted(c for c in old if c not in keep)
    inserted = sum(1 for i in changed if ids[i] not in old)
    return Diff(changed, removed, {"inserted": inserted, "updated": len(changed) - inserted,
                                   "deleted": len(removed),
                                   "unchanged": rows.num_rows - len(changed)})
