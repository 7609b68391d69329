"""Content-addressed vector store: (embedding space, sha256 of the exact model input) -> vector.

Layout: `<cache>/<space>/part-<sha256>.parquet`, columns `key` (hex sha256 of prefix + text)
and `vector` (`fixed_size_list<float32>[d]`). A space is the model fingerprint (files, length,
normalisation, prefixes), so a model change can never return another space's vectors.
Shards are only ever added (append-friendly, DVC-friendly) until `gc` rewrites them.
A shard's name is the sha256 of its bytes: `verify` checks it, and that every vector is
finite (and of length 1 where normalised), before a run uses the space; a shard that fails
is named in the log and deleted, so its texts are encoded again, never used.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from tasks.core.catalog import VECTOR_COLUMN
from tasks.core.fingerprint import sha256_file, sha256_text
from tasks.core.io import raise_disk_full_at
from tasks.core.shard_files import check_shards, checksum_problem, remove_dead_temps
from tasks.core.vectors import arrow_to_vectors, vector_problem, vectors_to_arrow

ROW_GROUP_ROWS = 8192  # a lookup reads the vectors of whole row groups that hold a hit
SHARD_NAME = re.compile(r"part-([0-9a-f]{64})\.parquet")
PROBES = "probes"  # the search choice's probes, beside the spaces (tasks/query/probe_store.py)


def text_keys(texts: Iterable[str], prefix: str) -> list[str]:
    """Cache key of each text: sha256 of exactly what the model reads."""
    return [sha256_text(prefix + t) for t in texts]


def _space_dir(cache: Path, space: str) -> Path:
    return Path(cache) / space[:32]


def lookup(cache: Path, space: str, keys: list[str], d: int) -> tuple[np.ndarray, np.ndarray]:
    """(found mask, vectors) for `keys`; rows not found are zeros.

    Shards are scanned row group by row group on the key column; vectors are read only for
    row groups that hold a wanted key, so memory is one row group, not the cache.
    """
    found = np.zeros(len(keys), dtype=bool)
    x = np.zeros((len(keys), d), dtype="float32")
    folder = _space_dir(cache, space)
    if not keys or not folder.is_dir():
        return found, x
    want = pa.array(sorted(set(keys)), pa.string())
    vector_of: dict[str, np.ndarray] = {}
    for shard in sorted(folder.glob("part-*.parquet")):
        with pq.ParquetFile(shard) as pf:
            for i in range(pf.num_row_groups):
                hit = pc.is_in(pf.read_row_group(i, columns=["key"]).column("key"), want)
                if not pc.any(hit).as_py():
                    continue
                rows = pf.read_row_group(i, columns=["key", VECTOR_COLUMN]).filter(hit)
                vectors = arrow_to_vectors(rows.column(VECTOR_COLUMN))
                if vectors.shape[1] != d:
                    raise ValueError(f"{folder}: cached vectors are {vectors.shape[1]}-d, "
                                     f"model gives {d}-d")
                # A key a crash left in two shards: the later shard wins, as in one scan.
                vector_of.update(zip(rows.column("key").to_pylist(), vectors, strict=True))
    for i, key in enumerate(keys):
        v = vector_of.get(key)
        if v is not None:
            found[i] = True
            x[i] = v
    return found, x


def append(cache: Path, space: str, keys: list[str], x: np.ndarray) -> Path | None:
    """Add a shard with `keys` -> rows of `x` (written atomically); None when empty."""
    if not keys:
        return None
    folder = _space_dir(cache, space)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".part-{sha256_text(''.join(sorted(keys)))[:24]}.parquet.tmp-{os.getpid()}"
    try:
        pq.write_table(pa.table({"key": keys, VECTOR_COLUMN: vectors_to_arrow(x)}), tmp,
                       compression="zstd", row_group_size=ROW_GROUP_ROWS)
        path = folder / f"part-{sha256_file(tmp)}.parquet"  # the name is the checksum
        os.replace(tmp, path)
    except OSError as err:  # a full disk: no half-written shard stays, the file is named
        tmp.unlink(missing_ok=True)
        raise_disk_full_at(err, tmp)
        raise
    except BaseException:  # an interrupt: no half-written shard stays
        tmp.unlink(missing_ok=True)
        raise
    return path


def shard_problem(shard: Path, d: int | None, unit: bool) -> str | None:
    """Why a shard cannot be used (its bytes are not those its name's checksum names, it
    cannot be read, a vector is not finite or, when `unit`, not of length 1, or vectors are
    not `d`-d), or None."""
    problem = checksum_problem(shard, SHARD_NAME,
                               "no checksum in its name (written before shards carried one)")
    if problem:
        return problem
    try:
        with pq.ParquetFile(shard) as pf:
            for i in range(pf.num_row_groups):
                x = arrow_to_vectors(pf.read_row_group(i, columns=[VECTOR_COLUMN]).column(0))
                if d is not None and x.shape[1] != d:
                    return f"its vectors are {x.shape[1]}-d, the model gives {d}-d"
                problem = vector_problem(x, unit)
                if problem:
                    return f"row group {i}: {problem}"
    except (OSError, pa.ArrowException, TypeError) as err:
        return f"unreadable ({err})"
    return None


def verify(cache: Path, space: str | None = None, d: int | None = None, unit: bool = False,
           drop: bool = True) -> list[tuple[Path, str]]:
    """Check every shard of `space` (of every space when None): (shard, why) for each that
    fails `shard_problem`, each logged by name and, with `drop`, deleted so that its texts
    are encoded again."""
    folders = [_space_dir(cache, space)] if space else sorted(
        p for p in Path(cache).iterdir() if p.is_dir())
    shards = sorted(s for f in folders if f.is_dir() for s in f.glob("part-*.parquet"))
    return check_shards(shards, lambda shard: shard_problem(shard, d, unit), "vector cache",
                        "its texts are encoded again", drop)


def remove_leftovers(cache: Path) -> int:
    """Delete shard files a killed writer left half-written (`.part-*.tmp-PID`, that PID gone):
    they would otherwise stay in the cache and in `dvc.lock`. Returns how many."""
    return remove_dead_temps(cache, "*/.part-*.tmp-*")


def gc(cache: Path, keep: dict[str, set[str]]) -> dict[str, int]:
    """Keep only `keep[space]` keys; drop other spaces, leftovers of killed writers and
    shards that fail `verify` (the probes folder keeps its newest files itself). Returns
    rows kept and dropped."""
    remove_leftovers(cache)
    kept = dropped = 0
    wanted = {space[:32]: keys for space, keys in keep.items()}
    for folder in sorted(p for p in Path(cache).iterdir() if p.is_dir() and p.name != PROBES):
        if folder.name in wanted:  # never carry a damaged shard's rows into a new one
            verify(cache, folder.name)
        shards = sorted(folder.glob("part-*.parquet"))
        if folder.name not in wanted:
            dropped += sum(pq.read_metadata(s).num_rows for s in shards)
            shutil.rmtree(folder)
            continue
        table = ds.dataset(shards, format="parquet").to_table() if shards else None
        if table is None:
            continue
        mask = pc.is_in(table.column("key"), pa.array(sorted(wanted[folder.name])))
        # One row per key: later shards may repeat a key a crash left behind.
        live = table.filter(mask)
        _, first = np.unique(np.array(live.column("key").to_pylist(), dtype=object),
                             return_index=True)
        live = live.take(pa.array(np.sort(first)))
        dropped += table.num_rows - live.num_rows
        kept += live.num_rows
        keys = live.column("key").to_pylist()
        new = append(cache, folder.name, keys, arrow_to_vectors(live.column(VECTOR_COLUMN)))
        for shard in shards:
            if shard != new:
                shard.unlink()
    return {"kept": kept, "dropped": dropped}
