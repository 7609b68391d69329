"""export: the gated index's chunks -> LanceDB and/or PostgreSQL + pgvector, kept in step.

Rows: chunk_id, doc_id, source, title, text, members (the chunk ids dedup folded into it),
index_fingerprint (of the index that last changed the row), row_hash, vector (the index's own
vectors, so an exact search in the store ranks as the FAISS index does).
Invariant: nothing is exported when the gate failed; a store gains only changed rows and loses
deleted chunks, in one transaction (PostgreSQL) or one table version (LanceDB).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pyarrow as pa

from tasks.core.catalog import EXPORTED, INDEX_MEMBERS, KEPT
from tasks.core.config import ExportConfig
from tasks.core.progress import task_logger
from tasks.core.runtime import StageRun, main, stage_task, start_stage
from tasks.evaluation.metrics import check_gate

TEXT_COLUMNS = ("chunk_id", "doc_id", "source", "title", "text")


def row_hashes(table: pa.Table, members: list[list[str]]) -> list[str]:
    """sha256 of each row's text fields, members and vector bytes: what a store compares."""
    texts = zip(*(table.column(c).to_pylist() for c in TEXT_COLUMNS), strict=True)
    vectors = table.column("vector").combine_chunks().values.to_numpy(zero_copy_only=False)
    d = table.schema.field("vector").type.list_size
    out = []
    for i, (fields, group) in enumerate(zip(texts, members, strict=True)):
        h = hashlib.sha256(json.dumps([*fields, group], ensure_ascii=False).encode())
        h.update(vectors[i * d:(i + 1) * d].tobytes())
        out.append(h.hexdigest())
    return out


def export_rows(kept: pa.Table, members: pa.Table, index_fingerprint: str) -> pa.Table:
    """The rows a store holds: each indexed chunk, its group's members, its hash."""
    groups: dict[str, list[str]] = {}
    for group, chunk in zip(members.column("group_chunk_id").to_pylist(),
                            members.column("chunk_id").to_pylist(), strict=True):
        groups.setdefault(group, []).append(chunk)
    lists = [sorted(groups.get(c, [])) for c in kept.column("chunk_id").to_pylist()]
    n = kept.num_rows
    return pa.table({
        **{c: kept.column(c) for c in TEXT_COLUMNS},
        "members": pa.array(lists, pa.list_(pa.string())),
        "index_fingerprint": pa.array([index_fingerprint] * n, pa.string()),
        "row_hash": pa.array(row_hashes(kept, lists), pa.string()),
        "vector": kept.column("vector"),
    })


def sync_targets(rows: pa.Table, cfg: ExportConfig, run: StageRun) -> dict[str, Any]:
    """Each configured store brought to `rows`: target -> where it is and what changed."""
    out: dict[str, Any] = {}
    if cfg.lancedb.uri:
        from tasks.storage.lancedb_sync import sync_lancedb  # noqa: PLC0415

        out["lancedb"] = sync_lancedb(rows, cfg.lancedb, run.root)
    if cfg.postgres.dsn_env:
        from tasks.storage.pgvector_sync import sync_postgres  # noqa: PLC0415

        out["postgres"] = sync_postgres(rows, cfg.postgres)
    return out


@stage_task("export")
def export_task(root: str = ".") -> str:
    """Keep the configured stores in step with the index that passed the gate."""
    run = start_stage("export", root)
    cfg = run.params.export
    check_gate(run.inputs["evaluate"], "export", "every store is")
    fp = run.fingerprint()
    targets: dict[str, Any] = {}
    if cfg.lancedb.uri or cfg.postgres.dsn_env:
        kept, members = run.read(KEPT), run.read(INDEX_MEMBERS)
        rows = export_rows(kept, members, run.inputs["index"]["fingerprint"])
        targets = sync_targets(rows, cfg, run)
    with run.output(fp, cfg) as out:
        out.write_json(EXPORTED, targets)
        out.record(targets=targets, rows={t: c["inserted"] + c["updated"] + c["unchanged"]
                                          for t, c in targets.items()})
    task_logger().info("export: %s in %.1f s", "; ".join(
        f"{t} +{c['inserted']} ~{c['updated']} -{c['deleted']} ={c['unchanged']}"
        for t, c in targets.items()) or "no store configured", run.seconds)
    return str(run.out_dir)


if __name__ == "__main__":
    main(export_task)
