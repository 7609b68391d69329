"""A LanceDB table kept in step with the exported rows, in one new table version per run.

Rows are matched on `chunk_id`: a row whose `row_hash` changed is updated, a new one
inserted, one the export no longer holds deleted, all by one `merge_insert` (one version;
readers of the previous version are untouched, and a failed merge writes no version).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from tasks.core.config import LanceDBTarget
from tasks.storage.export_diff import diff
from tasks.storage.s3 import is_s3


def _connect(target: LanceDBTarget, root: Path) -> tuple[Any, str]:
    import lancedb  # noqa: PLC0415  (the export extra)

    uri = target.uri if is_s3(target.uri) else str((root / target.uri).resolve())
    return lancedb.connect(uri), uri


def _check_dimension(table: Any, rows: pa.Table, where: str) -> None:
    have = table.schema.field("vector").type.list_size
    want = rows.schema.field("vector").type.list_size
    if have != want:
        raise ValueError(f"export.lancedb: {where} holds {have}-d vectors, this index has "
                         f"{want}-d; export to another table or drop that one")


def sync_lancedb(rows: pa.Table, target: LanceDBTarget, root: Path) -> dict[str, Any]:
    """Bring the target table to `rows`; where it is, its version and what changed."""
    db, uri = _connect(target, root)
    where = f"{uri} table {target.table}"
    try:
        table = db.open_table(target.table)
    except ValueError:  # "Table ... was not found"
        table = db.create_table(target.table, data=rows)
        return {"uri": uri, "table": target.table, "version": table.version,
                **diff({}, rows).counts}
    _check_dimension(table, rows, where)
    old = table.search().select(["chunk_id", "row_hash"]).limit(None).to_arrow()
    counts = diff(dict(zip(old.column("chunk_id").to_pylist(),
                           old.column("row_hash").to_pylist(), strict=True)), rows).counts
    if counts["inserted"] or counts["updated"] or counts["deleted"]:
        (table.merge_insert("chunk_id")
         .when_matched_update_all(where="target.row_hash != source.row_hash")
         .when_not_matched_insert_all()
         .when_not_matched_by_source_delete()
         .execute(rows))
    return {"uri": uri, "table": target.table, "version": table.version, **counts}
