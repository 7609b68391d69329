"""`embedpipe cache` on the per-document result caches of ingest, clean and chunk
(`tasks.core.result_cache`), beside the vector cache: verify every shard, and collect the
results no current input needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.core import result_cache
from tasks.core.catalog import CLEAN_DOCS, INGEST_DOCS, StageFile
from tasks.core.config import Params

# Each cache folder under paths.result_cache: its stage, and the table its keys are read
# from (None: the keys need the source files read, so only other spaces are dropped).
PARTS: dict[str, tuple[str, StageFile | None]] = {
    "ingest/stat": ("ingest", None), "ingest/files": ("ingest", None),
    "clean": ("clean", INGEST_DOCS), "chunk": ("chunk", CLEAN_DOCS),
}


def verify_all(root: Path, params: Params) -> tuple[int, list[tuple[Path, str]]]:
    """(shards checked, (shard, why) of each bad one, dropped) over every space."""
    cache = root / params.paths.result_cache
    folders = sorted(p for part in PARTS for p in (cache / part).glob("*") if p.is_dir())
    checked = sum(len(list(f.glob("part-*.parquet"))) for f in folders)
    return checked, [bad for f in folders for bad in result_cache.verify(f)]


def _current(root: Path, stage: str) -> tuple[Any, str] | None:
    """The stage's run (inputs read) and its current result space; None when the stage
    cannot start (no upstream output yet)."""
    from tasks.core.runtime import start_stage  # noqa: PLC0415

    try:
        run = start_stage(stage, root)
    except ValueError:
        return None
    if stage == "chunk":  # its facts: the tokenizer's files and the budget
        from tasks.chunk import chunk_fingerprint  # noqa: PLC0415

        chunk_fingerprint(run, run.params.chunk.max_tokens)
    return run, run.result_space(**run.facts)


def _input_keys(run: Any, stage: str, entry: StageFile) -> set[str]:
    """The keys of every document of the stage's current input, by the stage's own rule."""
    import importlib  # noqa: PLC0415

    keys_of = importlib.import_module(f"tasks.{stage}").document_keys
    return {k for batch in run.batches(entry) for k in keys_of(batch)}


def gc_all(root: Path, params: Params) -> dict[str, dict[str, int]]:
    """Per cache folder: spaces of other params or code dropped, and (clean, chunk) the
    current space compacted to the keys of the current input's documents."""
    cache, out = root / params.paths.result_cache, {}
    for part, (stage, entry) in PARTS.items():
        current = _current(root, stage) if (cache / part).is_dir() else None
        if current is None:
            continue
        run, space = current
        counts = {"spaces_dropped": result_cache.drop_other_spaces(cache / part, space[:32])}
        folder = cache / part / space[:32]
        if entry is not None and folder.is_dir():
            counts |= result_cache.compact(folder, _input_keys(run, stage, entry))
        out[part] = counts
    return out
