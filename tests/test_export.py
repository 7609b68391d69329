"""The export stage against a real PostgreSQL + pgvector (loopback) and an embedded LanceDB."""

from __future__ import annotations

import json
import time

import faiss
import numpy as np
import psycopg
import pytest

from tasks.core.params_file import write_overrides
from tests.postgres_server import postgres_server
from tests.workspace import make_workspace, run_stages

DSN_ENV = "EMBEDPIPE_TEST_PG_DSN"
TABLE = "embedpipe_chunks"


@pytest.fixture(scope="module")
def pg_dsn():
    with postgres_server() as dsn:
        yield dsn


@pytest.fixture
def exporting_ws(tmp_path, pg_dsn, monkeypatch):
    """A sample workspace whose export writes to both stores; the tables start empty."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
    monkeypatch.setenv(DSN_ENV, pg_dsn)
    ws = make_workspace(tmp_path / "ws")
    write_overrides(ws / "params.yaml", {"export.lancedb.uri": "stores/lance",
                                         "export.postgres.dsn_env": DSN_ENV})
    return ws


def exported(ws) -> dict:
    return json.loads((ws / "data/10_export/exported.json").read_text())


def pg_rows(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute(f"SELECT chunk_id, row_hash FROM {TABLE}").fetchall())


def lance_table(ws):
    import lancedb

    return lancedb.connect(str(ws / "stores/lance")).open_table(TABLE)


def top10_everywhere(ws, dsn: str, queries: np.ndarray) -> dict[str, list[list[str]]]:
    """Each query's exact top 10 chunk ids from the FAISS index and from both stores."""
    import pyarrow.parquet as pq

    index = faiss.read_index(str(ws / "data/07_index/index.faiss"))
    ids = pq.read_table(ws / "data/07_index/chunks.parquet", columns=["chunk_id", "int_id"])
    by_int = dict(zip(ids.column("int_id").to_pylist(), ids.column("chunk_id").to_pylist(),
                      strict=True))
    _, hits = index.search(queries, 10)
    out = {"faiss": [[by_int[int(i)] for i in row] for row in hits], "postgres": [],
           "lancedb": []}
    table = lance_table(ws)
    with psycopg.connect(dsn) as conn:
        conn.execute("SET enable_indexscan = off")  # exact: a sequential scan
        for q in queries:
            text = "[" + ",".join(map(repr, q.tolist())) + "]"
            out["postgres"].append([r[0] for r in conn.execute(
                f"SELECT chunk_id FROM {TABLE} ORDER BY vector <#> %s::vector LIMIT 10",
                (text,))])
            out["lancedb"].append(table.search(q).metric("dot").limit(10).to_arrow()
                                  .column("chunk_id").to_pylist())
    return out


def test_stores_follow_the_index_incrementally_and_search_like_it(exporting_ws, pg_dsn):
    ws = exporting_ws
    run_stages(ws)
    first = exported(ws)
    n = json.loads((ws / "data/07_index/_manifest.json").read_text())["rows"]["vectors"]
    for target in ("postgres", "lancedb"):
        assert first[target] | {"inserted": n} == first[target]
        assert first[target]["updated"] == first[target]["deleted"] == 0
    assert len(pg_rows(pg_dsn)) == lance_table(ws).count_rows() == n
    version = lance_table(ws).version

    import pyarrow.parquet as pq

    kept = pq.read_table(ws / "data/06_dedup/vectors.parquet")
    x = np.asarray(kept.column("vector").to_pylist(), dtype="float32")
    rng = np.random.default_rng(0)
    queries = x[rng.choice(len(x), 25, replace=False)] + rng.normal(0, 0.05, (25, x.shape[1]))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype("float32")
    top = top10_everywhere(ws, pg_dsn, queries)
    assert top["postgres"] == top["faiss"] and top["lancedb"] == top["faiss"]

    # members: every deduplicated chunk is listed under its kept twin
    with psycopg.connect(pg_dsn) as conn:
        listed = {m for (ms,) in conn.execute(f"SELECT members FROM {TABLE}") for m in ms}
    dropped = pq.read_table(ws / "data/06_dedup/dropped.parquet").column("dropped_chunk_id")
    assert listed == set(dropped.to_pylist()) and listed

    # one document gone, one edited: only their rows change, in one new LanceDB version
    (ws / "data/sample/astronomy/black-holes-event-horizon.txt").unlink()
    page = ws / "data/sample/baking/brioche.md"
    page.write_text(page.read_text() + "\n\nA closing line added for the export test.\n")
    run_stages(ws)
    second = exported(ws)
    for target in ("postgres", "lancedb"):
        c = second[target]
        assert c["deleted"] >= 1 and c["inserted"] + c["updated"] >= 1
        assert c["unchanged"] > 0.8 * n
    assert lance_table(ws).version == version + 1
    assert set(pg_rows(pg_dsn)) == set(lance_table(ws).to_arrow().column("chunk_id")
                                       .to_pylist())

    run_stages(ws, ["export"])  # nothing changed: nothing written, no new version
    assert all(exported(ws)[t]["inserted"] + exported(ws)[t]["updated"]
               + exported(ws)[t]["deleted"] == 0 for t in ("postgres", "lancedb"))
    assert lance_table(ws).version == version + 1


def test_a_failed_gate_exports_nothing(exporting_ws, pg_dsn):
    ws = exporting_ws
    run_stages(ws)
    before, version = pg_rows(pg_dsn), lance_table(ws).version
    (ws / "data/sample/astronomy/black-holes-event-horizon.txt").unlink()
    write_overrides(ws / "params.yaml", {"evaluate.min_labeled_ndcg_at_10": 1.0})
    with pytest.raises(ValueError, match="quality gate failed"):
        run_stages(ws)
    from flows.pipeline import STAGE_TASKS

    with pytest.raises(ValueError, match="export: the evaluation gate did not pass"):
        STAGE_TASKS["export"].fn(root=str(ws))
    assert pg_rows(pg_dsn) == before and lance_table(ws).version == version


def test_unreachable_server_is_one_clear_error_in_bounded_time(exporting_ws, monkeypatch):
    from tasks.core.config import PostgresTarget
    from tasks.storage.pgvector_sync import sync_postgres
    from tests.workspace import free_port

    monkeypatch.setenv(DSN_ENV, f"postgresql://u:s3cret-pw@127.0.0.1:{free_port()}/db")
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=f"cannot connect through \\${DSN_ENV}") as err:
        sync_postgres(_rows(4), PostgresTarget(dsn_env=DSN_ENV, connect_timeout_s=3))
    assert time.monotonic() - started < 10 and "s3cret-pw" not in str(err.value)


def test_a_store_of_another_dimension_is_refused_naming_both(exporting_ws, pg_dsn):
    from tasks.core.config import LanceDBTarget, PostgresTarget
    from tasks.storage.lancedb_sync import sync_lancedb
    from tasks.storage.pgvector_sync import sync_postgres

    sync_postgres(_rows(3), PostgresTarget(dsn_env=DSN_ENV))
    sync_lancedb(_rows(3), LanceDBTarget(uri="stores/lance"), exporting_ws)
    with pytest.raises(ValueError, match=r"holds vector\(3\), this index has 4-d"):
        sync_postgres(_rows(4), PostgresTarget(dsn_env=DSN_ENV))
    with pytest.raises(ValueError, match=r"holds 3-d vectors, this index has 4-d"):
        sync_lancedb(_rows(4), LanceDBTarget(uri="stores/lance"), exporting_ws)
    assert len(pg_rows(pg_dsn)) == 2 and lance_table(exporting_ws).count_rows() == 2


def _rows(d: int):
    import pyarrow as pa

    from tasks.core.vectors import vectors_to_arrow
    from tasks.export import export_rows

    kept = pa.table({"chunk_id": ["a:0000", "b:0000"], "doc_id": ["a", "b"],
                     "source": ["a.txt", "b.txt"], "title": [None, "B"], "text": ["x", "y"],
                     "vector": vectors_to_arrow(np.eye(2, d, dtype="float32"))})
    members = pa.table({"group_chunk_id": pa.array([], pa.string()),
                        "chunk_id": pa.array([], pa.string())})
    return export_rows(kept, members, "f" * 64)
