"""A PostgreSQL table with pgvector kept in step with the exported rows, in one transaction.

The DSN comes from the environment variable the params name, never from params. The table
(`vector(d)` column, inner-product index per params) is created when missing; changed and new
rows go through COPY into a temporary table and one `INSERT ... ON CONFLICT` upsert, rows no
longer exported are deleted, and the transaction commits only when all of it succeeded, so a
failed export leaves the previous rows readable.
"""

from __future__ import annotations

import os
from typing import Any

import pyarrow as pa

from tasks.core.config import PostgresTarget
from tasks.core.vectors import arrow_to_vectors
from tasks.storage.export_diff import diff

COLUMNS = ("chunk_id", "doc_id", "source", "title", "text", "members", "index_fingerprint",
           "row_hash", "vector")


def _dsn(target: PostgresTarget) -> str:
    dsn = os.environ.get(target.dsn_env or "")
    if not dsn:
        raise ValueError(f"export.postgres.dsn_env: the environment variable "
                         f"{target.dsn_env!r} is not set (it holds the connection string)")
    return dsn


def _connect(target: PostgresTarget) -> Any:
    import psycopg  # noqa: PLC0415  (the export extra)

    try:
        return psycopg.connect(_dsn(target), connect_timeout=target.connect_timeout_s)
    except psycopg.OperationalError as err:  # its text names host and port, not the password
        raise RuntimeError(f"export.postgres: cannot connect through ${target.dsn_env} within "
                           f"{target.connect_timeout_s} s: {str(err).strip()}") from None


def table_dimension(conn: Any, table: str) -> int | None:
    """The `vector(d)` width of `table`'s vector column; None when there is no such table."""
    row = conn.execute(
        "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "WHERE a.attrelid = to_regclass(%s) AND a.attname = 'vector' AND NOT a.attisdropped",
        (table,)).fetchone()
    if row is None:
        return None
    return int(row[0].removeprefix("vector(").removesuffix(")"))


def _create_table(conn: Any, table: Any, d: int) -> None:
    from psycopg import sql  # noqa: PLC0415

    conn.execute(sql.SQL(
        "CREATE TABLE {} (chunk_id text PRIMARY KEY, doc_id text NOT NULL, source text, "
        "title text, text text NOT NULL, members text[] NOT NULL, index_fingerprint text "
        "NOT NULL, row_hash text NOT NULL, vector vector({}) NOT NULL)").format(
            table, sql.Literal(d)))


def _vector_text(v: Any) -> str:
    """pgvector's text form; a float32's shortest double repr parses back to it exactly."""
    return "[" + ",".join(map(repr, v.tolist())) + "]"


def _upsert(conn: Any, table: Any, rows: pa.Table) -> None:
    from psycopg import sql  # noqa: PLC0415

    cols = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
    conn.execute(sql.SQL("CREATE TEMP TABLE staged (LIKE {} INCLUDING DEFAULTS) "
                         "ON COMMIT DROP").format(table))
    vectors = arrow_to_vectors(rows.column("vector"))
    with conn.cursor().copy(sql.SQL("COPY staged ({}) FROM STDIN").format(cols)) as copy:
        for row, v in zip(rows.drop_columns(["vector"]).to_pylist(), vectors, strict=True):
            copy.write_row([*(row[c] for c in COLUMNS[:-1]), _vector_text(v)])
    updates = sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
                                 for c in COLUMNS[1:])
    conn.execute(sql.SQL("INSERT INTO {t} ({c}) SELECT {c} FROM staged ON CONFLICT (chunk_id) "
                         "DO UPDATE SET {u}").format(t=table, c=cols, u=updates))


def _ensure_index(conn: Any, target: PostgresTarget, n_rows: int) -> None:
    from psycopg import sql  # noqa: PLC0415

    table = sql.Identifier(target.table)
    for kind in ("hnsw", "ivfflat"):
        if kind != target.index:
            conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(
                sql.Identifier(f"{target.table}_{kind}")))
    if target.index == "none":
        return
    options = (f"m = {target.hnsw_m}, ef_construction = {target.hnsw_ef_construction}"
               if target.index == "hnsw"
               else f"lists = {target.ivfflat_lists or max(1, n_rows // 1000)}")
    conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING {} (vector vector_ip_ops) "
                         "WITH ({})").format(sql.Identifier(f"{target.table}_{target.index}"),
                                             table, sql.SQL(target.index), sql.SQL(options)))


def sync_postgres(rows: pa.Table, target: PostgresTarget) -> dict[str, Any]:
    """Bring the target table to `rows` in one transaction; its name and what changed."""
    from psycopg import sql  # noqa: PLC0415

    d = rows.schema.field("vector").type.list_size
    table = sql.Identifier(target.table)
    with _connect(target) as conn:  # commits on success, rolls back on any error
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        have = table_dimension(conn, target.table)
        if have is None:
            _create_table(conn, table, d)
        elif have != d:
            raise ValueError(f"export.postgres: table {target.table} holds vector({have}), this "
                             f"index has {d}-d vectors; export to another table or drop it")
        old = dict(conn.execute(sql.SQL("SELECT chunk_id, row_hash FROM {}").format(table))
                   .fetchall())
        changes = diff(old, rows)
        if changes.changed:
            _upsert(conn, table, rows.take(changes.changed))
        if changes.removed:
            conn.execute(sql.SQL("DELETE FROM {} WHERE chunk_id = ANY(%s)").format(table),
                         (changes.removed,))
        _ensure_index(conn, target, rows.num_rows)
    return {"table": target.table, **changes.counts}
