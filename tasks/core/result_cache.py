"""Content-addressed per-document results of a stage: (stage space, sha256 of the input) -> value.

What encode's vector cache does for vectors, for the stages whose work is per document
(clean, chunk): a rerun after a corpus change computes only the documents it has not seen.

Layout: `<cache>/<stage>/<space[:32]>/part-<sha256>.parquet`, columns `key` (hex sha256 of
everything the stage reads of one document) and `value` (the stage's result for it, as
canonical JSON). A space is the sha256 of what else decides a result: the stage's declared
params, its facts (the tokenizer's files), the code of every module it runs and the versions
of the libraries that shape outputs; so a change of any of them reads another space and
never another space's results. A shard's name is the sha256 of its bytes: `verify` checks
it before a run reads the space, and a shard that fails is named in the log and deleted
(its documents are computed again, never used). A run adds at most one shard; `compact`
rewrites the space to the keys a run used once dead rows or shards pile up, and drops the
stage's other spaces, so the cache stays within about twice the live results.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.core.fingerprint import canonical_json, sha256_file, sha256_text
from tasks.core.io import raise_disk_full_at
from tasks.core.shard_files import check_shards, checksum_problem, remove_dead_temps

ROW_GROUP_ROWS = 1024  # a lookup decodes the values of the row groups that hold a hit
SHARD_NAME = re.compile(r"part-([0-9a-f]{64})\.parquet")
MAX_SHARDS = 16  # more small shards, and a run compacts them: few files for DVC to hash
FLUSH_CHARS = 32 << 20  # new results held before they are written as a shard
SMALL_SHARD_BYTES = 1 << 20  # a shard below this counts toward MAX_SHARDS
MAX_DEAD_SHARE = 0.5  # compact once more than this share of rows is no run's result
SCHEMA = pa.schema([("key", pa.string()), ("value", pa.string())])


def space_of(stage: str, decided_by: dict[str, Any], code: dict[str, Path],
             versions: dict[str, str]) -> str:
    """The space of a stage's results: its deciding params and facts (`decided_by`), the
    sha256 of each of its code files (repo path -> file) and the library versions."""
    files = {name: sha256_file(path) for name, path in sorted(code.items())}
    return sha256_text(canonical_json({"stage": stage, "decided_by": decided_by,
                                       "code": files, "versions": versions}))


def document_key(*parts: str | None) -> str:
    """A document's key: sha256 of the fields the stage reads, each length-prefixed so that
    no two field lists give the same bytes."""
    return sha256_text("".join(f"{len(p)}:{p}" if p is not None else "-:" for p in parts))


def space_dir(cache: Path, stage: str, space: str) -> Path:
    return Path(cache) / stage / space[:32]


def shard_problem(shard: Path) -> str | None:
    """Why a shard cannot be used (no checksum in its name, bytes that do not match it, an
    unreadable file or another schema), or None."""
    problem = checksum_problem(shard, SHARD_NAME)
    if problem:
        return problem
    try:
        schema = pq.read_schema(shard)
    except (OSError, pa.ArrowException) as err:
        return f"unreadable ({err})"
    return None if schema.equals(SCHEMA) else f"schema {schema} is not {SCHEMA}"


def verify(folder: Path, drop: bool = True) -> list[tuple[Path, str]]:
    """(shard, why) for each shard of one space `folder` that fails `shard_problem`, logged
    by name and, with `drop`, deleted so that its documents are computed again."""
    return check_shards(sorted(Path(folder).glob("part-*.parquet")), shard_problem,
                        "result cache", "its documents are computed again", drop)


def remove_leftovers(folder: Path) -> int:
    """Delete shards a killed writer left half-written (`.part-*.tmp-PID`, that PID gone)."""
    return remove_dead_temps(folder, ".part-*.tmp-*")


def write_shard(folder: Path, keys: list[str], values: list[str]) -> Path | None:
    """A shard of `keys` -> `values`, written atomically and named by its sha256."""
    if not keys:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".part-{sha256_text(''.join(sorted(keys)))[:24]}.parquet.tmp-{os.getpid()}"
    try:
        pq.write_table(pa.table({"key": keys, "value": values}, schema=SCHEMA), tmp,
                       compression="zstd", row_group_size=ROW_GROUP_ROWS)
        path = folder / f"part-{sha256_file(tmp)}.parquet"
        os.replace(tmp, path)
    except OSError as err:  # a full disk: no half-written shard stays, the file is named
        tmp.unlink(missing_ok=True)
        raise_disk_full_at(err, tmp)
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


class ResultCache:
    """One stage's results in one space, opened for a run: shards verified, keys read (values
    are decoded only for the row groups that hold a hit), new results gathered and written as
    one shard by `close`, which also compacts when the space has grown past its bounds.

    Args:
        cache: the cache root (`paths.result_cache`).
        stage: the stage whose results these are.
        space: `space_of` the stage's run.
    """

    def __init__(self, cache: Path, stage: str, space: str) -> None:
        self.root, self.stage = Path(cache), stage
        self.folder = space_dir(cache, stage, space)
        self.dropped: dict[str, str] = {}
        if self.folder.is_dir():
            remove_leftovers(self.folder)
            self.dropped = {p.name: why for p, why in verify(self.folder)}
        self.shards = sorted(self.folder.glob("part-*.parquet")) if self.folder.is_dir() else []
        self.where: dict[str, tuple[int, int, int]] = {}  # key -> shard, row group, row
        self.rows = 0
        for s, shard in enumerate(self.shards):
            with pq.ParquetFile(shard) as pf:
                for g in range(pf.num_row_groups):
                    keys = pf.read_row_group(g, columns=["key"]).column(0).to_pylist()
                    self.where.update((k, (s, g, r)) for r, k in enumerate(keys))
                    self.rows += len(keys)
        self.new: dict[str, str] = {}  # in the order computed: corpus order
        self.written: set[str] = set()
        self._pending = 0
        self.used: set[str] = set()
        self.hits = 0
        self._last: tuple[tuple[int, int] | None, dict[str, str]] = (None, {})

    def get(self, keys: list[str]) -> list[Any | None]:
        """The cached result of each key (None where there is none), decoded from JSON."""
        self.used.update(keys)
        out = []
        for k in keys:
            where = self.where.get(k)
            raw = self._group(where[0], where[1]).get(k) if where else None
            self.hits += raw is not None  # read from an earlier run's results
            raw = self.new.get(k) if raw is None else raw
            out.append(None if raw is None else json.loads(raw))
        return out

    def _group(self, s: int, g: int) -> dict[str, str]:
        """Key -> value of one row group; the last one read is kept, since shards hold
        results in corpus order and the next lookup mostly wants the same group."""
        if self._last[0] != (s, g):
            with pq.ParquetFile(self.shards[s]) as pf:
                group = pf.read_row_group(g)
            self._last = ((s, g), dict(zip(group.column("key").to_pylist(),
                                           group.column("value").to_pylist(), strict=True)))
        return self._last[1]

    def put(self, keys: list[str], values: list[Any]) -> None:
        """Results computed in this run; written as a shard once `FLUSH_CHARS` of them are
        held (memory stays bounded on a first, full build), the rest by `close`."""
        self.used.update(keys)
        for k, v in zip(keys, values, strict=True):
            if k not in self.where and k not in self.new and k not in self.written:
                self.new[k] = raw = json.dumps(v, ensure_ascii=False, separators=(",", ":"))
                self._pending += len(raw)
        if self._pending > FLUSH_CHARS:
            self._flush()

    def _flush(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)  # a DVC out, even with no result
        write_shard(self.folder, list(self.new), list(self.new.values()))
        self.written.update(self.new)
        self.new, self._pending = {}, 0

    def close(self) -> dict[str, int]:
        """Write the new results; compact the space when more than `MAX_DEAD_SHARE` of its
        rows are unused by this run or more than `MAX_SHARDS` small shards pile up (one a
        nightly run), and drop the stage's other spaces. Returns counts for the manifest."""
        self._flush()
        total = self.rows + len(self.written)
        small = sum(p.stat().st_size < SMALL_SHARD_BYTES
                    for p in self.folder.glob("part-*.parquet"))
        compacted = len(self.used) < (1 - MAX_DEAD_SHARE) * total or small > MAX_SHARDS
        if compacted:
            compact(self.folder, self.used)
        drop_other_spaces(self.root / self.stage, self.folder.name)
        return {"reused": self.hits, "computed": len(self.written), "cache_rows": total,
                "compacted": int(compacted)}


def compact(folder: Path, keep: set[str]) -> dict[str, int]:
    """Rewrite one space's shards keeping only the `keep` keys (a key in two shards: once),
    in the order the shards held them, in shards of about `FLUSH_CHARS`; shards that fail
    `verify` are dropped first. Returns rows kept and dropped."""
    verify(folder)
    shards = sorted(Path(folder).glob("part-*.parquet"))
    live: dict[str, str] = {}
    seen: set[str] = set()
    written, total, chars = [], 0, 0
    for shard in shards:
        with pq.ParquetFile(shard) as pf:
            for g in range(pf.num_row_groups):
                group = pf.read_row_group(g)
                total += group.num_rows
                for k, v in zip(group.column("key").to_pylist(),
                                group.column("value").to_pylist(), strict=True):
                    if k in keep and k not in seen:
                        seen.add(k)
                        live[k] = v
                        chars += len(v)
                if chars > FLUSH_CHARS:
                    written.append(write_shard(Path(folder), list(live), list(live.values())))
                    live, chars = {}, 0
    written.append(write_shard(Path(folder), list(live), list(live.values())))
    for shard in shards:
        if shard not in written:
            shard.unlink()
    return {"kept": len(seen), "dropped": total - len(seen)}


def drop_other_spaces(stage_dir: Path, keep: str | None) -> int:
    """Remove every space folder of a stage but `keep` (results of other params or code,
    which no run of the current ones reads); returns how many folders went."""
    gone = 0
    for folder in sorted(p for p in Path(stage_dir).glob("*") if p.is_dir()):
        if folder.name != keep:
            shutil.rmtree(folder)
            gone += 1
    return gone
