"""What an index folder holds beside the FAISS index: the id -> chunk table (with each row's
vector hash, which keys incremental updates) and each kept chunk's duplicate group; and the
check that the vectors come from the embedding space the params name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tasks.core.catalog import INDEX_MEMBERS, VECTOR_COLUMN
from tasks.core.vectors import arrow_to_vectors
from tasks.indexing.updates import vector_keys


def indexed_chunks(table: pa.Table, int_ids: np.ndarray) -> pa.Table:
    """The kept chunk rows without their vectors, with their FAISS id and vector hash."""
    return table.drop_columns([VECTOR_COLUMN]).append_column(
        "int_id", pa.array(int_ids, pa.int64())).append_column(
        "vector_sha256", pa.array(vector_keys(arrow_to_vectors(table.column(VECTOR_COLUMN))),
                                  pa.string()))


def group_members(dropped: pa.Table) -> pa.Table:
    """Each dropped duplicate under the kept chunk standing for its group (from dedup)."""
    return pa.table({"group_chunk_id": dropped.column("group_chunk_id"),
                     "chunk_id": dropped.column("dropped_chunk_id"),
                     **{c: dropped.column(c) for c in ("doc_id", "source", "similarity", "kind")}},
                    schema=INDEX_MEMBERS.schema())


def check_space(dedup: dict[str, Any], reduce: dict[str, Any], want: dict[str, Any],
                where: Path) -> None:
    """Refuse vectors from another model than `want` (the one params name, a forced stale
    input) or from another transform than reduce's."""
    if dedup["model"]["fingerprint"] != want["fingerprint"]:
        raise ValueError(
            f"index: vectors in {where} come from model {dedup['model']['name']} "
            f"({dedup['model']['fingerprint'][:12]}), but encode.model is {want['name']} "
            f"({want['fingerprint'][:12]}); they are another embedding space. "
            "Rerun encode and what follows.")
    if dedup["space"] != reduce["space"]:
        raise ValueError(f"index: dedup vectors are in space {dedup['space'][:12]} but the "
                         f"transform is for {reduce['space'][:12]}; rerun dedup")
