"""The search choice's probes as the encode stage drew them, kept for the index stage.

The encode stage draws the first probes (`probe_drawing.drawn_probes`) to embed their texts
ahead; drawing them again at index build (every line of each drawn document split and
classed) was most of what the search choice spent before any scoring. So encode keeps them
in the vector cache's `probes/` folder, under a key naming everything they are a function of:
the chunk table's bytes (the sha256 its manifest records, which encode checked when it read
it), the seed and the drawing code; a file's name also carries the sha256 of its own bytes,
checked on reading. The index stage takes them from there (`probes_for_choice`) and, where it
needs more, draws on from the chunk table after the last one kept (from the drawing's state
kept with them), so the probes it uses are the same either way: a saving, never a source of
truth. The folder keeps the newest `KEEP` files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.core.fingerprint import canonical_json, sha256_file, sha256_text
from tasks.documents import context
from tasks.encoders.vector_cache import PROBES as FOLDER
from tasks.query import probe_drawing, weights
from tasks.query.probe_drawing import Probe, drawn_probes

KEEP = 4  # probe files kept: a few chunk tables back (variants, a rerun after a revert)
_CODE = (probe_drawing, context, weights)  # what decides the probes drawn from a table
CHUNK_FILE = "chunks.parquet"


def probes_key(chunk_manifest: dict[str, Any], seed: int) -> str:
    """The key of the probes drawn from the chunk table `chunk_manifest` records, at `seed`."""
    return sha256_text(canonical_json({
        "chunks": chunk_manifest["files"][CHUNK_FILE], "seed": seed, "numpy": np.__version__,
        "code": {m.__name__: sha256_file(Path(m.__file__)) for m in _CODE},
        "store": sha256_file(Path(__file__))}))


def keep_probes(cache: Path, key: str, probes: list[Probe], resume: dict[str, Any] | None
                ) -> Path:
    """Write `probes` (the first drawn, in order) under `key`, with the state to draw on
    after them (`probe_drawing.drawing`; None: they are all the table gives); drop all but
    the newest `KEEP` files."""
    folder = Path(cache) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table({
        "query": [p.query for p in probes], "doc_id": [p.doc_id for p in probes],
        "kind": [p.kind for p in probes], "text": [p.text for p in probes],
        "masked_ids": [list(p.masked) for p in probes],
        "masked_texts": [list(p.masked.values()) for p in probes]}).replace_schema_metadata(
        {"resume": json.dumps(resume)})
    tmp = folder / f".{key}.tmp-{os.getpid()}"
    pq.write_table(table, tmp)
    path = folder / f"{key}-{sha256_file(tmp)}.parquet"
    os.replace(tmp, path)
    for old in sorted(folder.glob("*.parquet"), key=lambda p: p.stat().st_mtime)[:-KEEP]:
        old.unlink(missing_ok=True)
    return path


def kept_probes(cache: Path, key: str) -> tuple[list[Probe], dict[str, Any] | None, bool]:
    """The probes kept under `key`, in the order drawn, the state to draw on after them and
    whether they are all the chunk table gives; none (and not complete) when no file has it
    or its bytes are not those its name says."""
    for path in sorted((Path(cache) / FOLDER).glob(f"{key}-*.parquet")):
        if path.stem.split("-", 1)[1] != sha256_file(path):
            continue
        try:
            table = pq.read_table(path)
            resume = json.loads(table.schema.metadata[b"resume"])
        except (OSError, KeyError, TypeError, ValueError):  # another layout: drawn again
            continue
        return [Probe(r["query"], r["doc_id"], r["kind"],
                      dict(zip(r["masked_ids"], r["masked_texts"], strict=True)), r["text"])
                for r in table.to_pylist()], resume, resume is None
    return [], None, False


def probes_for_choice(cache: Path | None, key: str, chunks: Callable[[], pa.Table],
                      seed: int) -> Iterator[Probe]:
    """The probes `drawn_probes(chunks(), seed)` gives, in order: those kept under `key`
    first, then drawn from the chunk table (read only then) on from the last kept."""
    kept, resume, complete = kept_probes(cache, key) if cache is not None else ([], None,
                                                                               False)
    yield from kept
    if not complete:
        yield from drawn_probes(chunks(), seed, resume)
