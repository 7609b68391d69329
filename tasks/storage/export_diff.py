"""What an export changes in a store: rows matched on `chunk_id`, compared by `row_hash`."""

from __future__ import annotations

import pyarrow as pa


def changed_rows(old: dict[str, str], rows: pa.Table) -> list[int]:
    """Positions in `rows` of those the store lacks or holds with another hash."""
    ids, hashes = rows.column("chunk_id").to_pylist(), rows.column("row_hash").to_pylist()
    return [i for i, (c, h) in enumerate(zip(ids, hashes, strict=True)) if old.get(c) != h]


def removed_ids(old: dict[str, str], rows: pa.Table) -> list[str]:
    """Chunk ids the store holds that the export no longer does."""
    keep = set(rows.column("chunk_id").to_pylist())
    return sorted(c for c in old if c not in keep)


def diff_counts(old: dict[str, str], rows: pa.Table) -> dict[str, int]:
    """Rows inserted, updated, deleted and left as they were."""
    changed = changed_rows(old, rows)
    ids = rows.column("chunk_id").to_pylist()
    inserted = sum(1 for i in changed if ids[i] not in old)
    return {"inserted": inserted, "updated": len(changed) - inserted,
            "deleted": len(removed_ids(old, rows)), "unchanged": rows.num_rows - len(changed)}
