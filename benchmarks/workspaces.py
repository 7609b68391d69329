"""The workspaces a benchmark measures: a generated corpus built through some stages and kept
(`--chunks N --keep DIR`), or workspaces already built (`--workspaces WS ...`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.report import timed_stages

REPO = Path(__file__).resolve().parents[1]


def generated_workspace(base: Path, n_chunks: int, stages: tuple[str, ...],
                        overrides: dict[str, Any] | None = None) -> Path:
    """`base/ws-<n_chunks>`: a corpus of about `n_chunks` from `benchmarks.corpus.generate`
    (`base/corpus-<n_chunks>`), built through `stages` with the project's params and
    `overrides`; kept, so a second call builds nothing."""
    from benchmarks.corpus import generate
    from tasks.core.config import load_params
    from tasks.core.params_file import write_overrides
    from tasks.core.registry import get_stage

    ws = base / f"ws-{n_chunks}"
    if (ws / "params.yaml").exists() and (get_stage(stages[-1]).out_dir(
            load_params(ws / "params.yaml"), ws) / "_manifest.json").exists():
        return ws
    generate(base / f"corpus-{n_chunks}", n_chunks, REPO / "data" / "sample")
    ws.mkdir(parents=True, exist_ok=True)
    (ws / "params.yaml").write_text((REPO / "params.yaml").read_text())
    write_overrides(ws / "params.yaml", {"ingest.source": str(base / f"corpus-{n_chunks}"),
                                         **(overrides or {})})
    timed_stages(ws, stages)
    return ws


def add_workspace_args(parser: argparse.ArgumentParser, built: str) -> None:
    """`--chunks`, `--keep` and `--workspaces` (workspaces `built` as the benchmark needs)."""
    parser.add_argument("--chunks", type=int, nargs="+", default=[59_000])
    parser.add_argument("--keep", type=Path,
                        help="where the generated corpora and their workspaces are kept")
    parser.add_argument("--workspaces", type=Path, nargs="+", default=[],
                        help=f"workspaces built {built}, measured instead, as they are")


def measured_workspaces(parser: argparse.ArgumentParser, args: argparse.Namespace,
                        prepare: Callable[[Path, int], Path]) -> list[tuple[str, Path]]:
    """(name, workspace) of each `--workspaces`, else of each `--chunks` size built by
    `prepare(keep, n)`."""
    if not args.workspaces and args.keep is None:
        parser.error("--keep is needed to build the generated corpora")
    return [(ws.name, ws) for ws in args.workspaces] or [
        (str(n), prepare(args.keep, n)) for n in args.chunks]
