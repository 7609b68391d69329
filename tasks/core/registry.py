"""The ordered list of stages: names, folders, inputs, params groups and files, kept once here.

The flow iterates it; `dvc.yaml` is generated from it (`embedpipe dvc-yaml`), and a test
holds the committed `dvc.yaml` to it. A stage's code deps are read from its imports, so
DVC calls a stage stale whenever any module it runs has changed.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from tasks.core import catalog
from tasks.core.catalog import METRICS_FILE

TASKS_DIR = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class StageSpec:
    """One pipeline stage as DVC and the flow see it."""

    name: str
    folder: str
    inputs: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    extra_deps: tuple[str, ...] = ()
    extra_outs: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        return f"tasks/{self.name}.py"

    def out_dir(self, params: Any, root: Path) -> Path:
        """The output folder under `params.paths.data` of the workspace `root`."""
        return Path(root) / params.paths.data / self.folder


_MODEL_KEYS = (
    "encode.model", "encode.revision", "encode.max_seq_length", "encode.passage_prefix",
)

# finetune reads the base model and how it reads text, and dedup's rule for a duplicate
# (never a hard negative of its twin).
_FINETUNE_KEYS = (
    "encode.model", "encode.revision", "encode.max_seq_length", "encode.passage_prefix",
    "encode.query_prefix", "dedup.threshold",
)

STAGES: tuple[StageSpec, ...] = (
    StageSpec("ingest", "01_ingest", (), ("ingest",), extra_deps=("${ingest.source}",)),
    StageSpec("clean", "02_clean", ("ingest",), ("clean",)),
    StageSpec("chunk", "03_chunk", ("clean",), ("chunk", *_MODEL_KEYS)),
    StageSpec("finetune", "03_finetune", ("chunk",), ("finetune", *_FINETUNE_KEYS)),
    StageSpec("encode", "04_encode", ("chunk", "finetune"), ("encode",),
              extra_outs=("${paths.vector_cache}",)),
    StageSpec("reduce", "05_reduce", ("encode",), ("reduce",)),
    StageSpec("dedup", "06_dedup", ("reduce", "chunk"), ("dedup",)),
    StageSpec("index", "07_index", ("dedup", "reduce", "chunk", "finetune"),
              ("index", "search")),
    StageSpec("evaluate", "08_evaluate", ("index", "dedup", "chunk", "ingest"), ("evaluate",),
              extra_deps=("${ingest.source}",)),
    StageSpec("publish", "09_publish", ("index", "evaluate"), ("publish",)),
    StageSpec("export", "10_export", ("index", "dedup", "evaluate"), ("export",)),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def get_stage(name: str) -> StageSpec:
    """The stage called `name`; ValueError lists the valid names."""
    for spec in STAGES:
        if spec.name == name:
            return spec
    raise ValueError(f"unknown stage {name!r}; stages are: {', '.join(STAGE_NAMES)}")


def downstream_of(name: str) -> tuple[str, ...]:
    """`name` and every stage that depends on it, in pipeline order."""
    hit = {get_stage(name).name}
    for spec in STAGES:
        if any(i in hit for i in spec.inputs):
            hit.add(spec.name)
    return tuple(n for n in STAGE_NAMES if n in hit)


def _module_file(module: str) -> Path | None:
    """The file of a `tasks.` module (None for packages and other libraries)."""
    if not module.startswith("tasks."):
        return None
    path = TASKS_DIR.parent / (module.replace(".", "/") + ".py")
    return path if path.is_file() else None


def _imports(path: Path) -> set[str]:
    """Modules `path` imports anywhere (lazy imports inside functions too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from pkg import mod`
    return found


@cache
def module_deps(stage: str) -> tuple[str, ...]:
    """The stage module and every `tasks` module it imports, transitively (repo paths)."""
    root = TASKS_DIR / f"{get_stage(stage).name}.py"
    seen, todo = {root}, [root]
    while todo:
        for module in _imports(todo.pop()):
            path = _module_file(module)
            if path is not None and path not in seen:
                seen.add(path)
                todo.append(path)
    rel = sorted(p.relative_to(TASKS_DIR.parent).as_posix() for p in seen - {root})
    return (get_stage(stage).module, *rel)


def dvc_plots(data_dir: str = "data") -> list[str]:
    """Top-level `plots:` of dvc.yaml: image files written by stages."""
    return [f"{data_dir}/{get_stage(p.stage).folder}/{p.name}" for p in catalog.PLOTS]


def dvc_stages(data_dir: str = "data") -> dict:
    """The `stages:` mapping of dvc.yaml, derived from STAGES and the stages' imports."""
    out: dict = {}
    for spec in STAGES:
        deps = [f"{data_dir}/{get_stage(i).folder}" for i in spec.inputs]
        deps += [*spec.extra_deps, *module_deps(spec.name)]
        entry: dict = {
            "cmd": f"python -m tasks.{spec.name}",
            "deps": deps,
            "params": list(spec.params),
            # persist: DVC must not delete an output before the stage runs: the stage swaps
            # its folder in whole, and index / vector cache build on their previous state.
            "outs": [{o: {"persist": True}} for o in (f"{data_dir}/{spec.folder}",
                                                       *spec.extra_outs)],
        }
        if spec.name == catalog.METRICS.stage:
            entry["metrics"] = [{METRICS_FILE: {"cache": False}}]
        out[spec.name] = entry
    return out
