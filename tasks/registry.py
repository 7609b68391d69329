"""The ordered list of stages: names, folders, inputs and params groups, kept once here.

The flow iterates it; `dvc.yaml` is generated from it (`embedpipe dvc-yaml`), and a test
holds the committed `dvc.yaml` to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.config import Params

CORE_MODULES = (
    "tasks/config.py", "tasks/fingerprint.py", "tasks/io.py", "tasks/registry.py",
    "tasks/runtime.py", "tasks/lock.py",
)
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class StageSpec:
    """One pipeline stage as DVC and the flow see it."""

    name: str
    folder: str
    inputs: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    extra_modules: tuple[str, ...] = ()
    extra_deps: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()
    extra_outs: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        return f"tasks/{self.name}.py"

    def out_dir(self, params: Params, root: Path) -> Path:
        return Path(root) / params.paths.data / self.folder


_MODEL_KEYS = (
    "encode.model", "encode.revision", "encode.max_seq_length", "encode.passage_prefix",
)

STAGES: tuple[StageSpec, ...] = (
    StageSpec("ingest", "01_ingest", (), ("ingest",), extra_deps=("${ingest.source}",)),
    StageSpec("clean", "02_clean", ("ingest",), ("clean",)),
    StageSpec("chunk", "03_chunk", ("clean",), ("chunk", *_MODEL_KEYS), ("tasks/models.py",)),
    StageSpec("encode", "04_encode", ("chunk",), ("encode",),
              ("tasks/models.py", "tasks/onnx_encoder.py", "tasks/vector_cache.py"),
              extra_outs=("${paths.vector_cache}",)),
    StageSpec("reduce", "05_reduce", ("encode",), ("reduce",), ("tasks/transform.py",)),
    StageSpec("dedup", "06_dedup", ("reduce", "chunk"), ("dedup",)),
    StageSpec("index", "07_index", ("dedup", "reduce"), ("index",),
              ("tasks/search.py", "tasks/probes.py", "tasks/lineage.py", "tasks/transform.py",
               "tasks/models.py", "tasks/onnx_encoder.py")),
    StageSpec(
        "evaluate", "08_evaluate", ("index", "dedup", "chunk", "ingest"), ("evaluate",),
        ("tasks/search.py", "tasks/index.py", "tasks/probes.py", "tasks/retrieval.py",
         "tasks/health.py", "tasks/plots.py", "tasks/runs.py", "tasks/lineage.py",
         "tasks/models.py", "tasks/onnx_encoder.py"),
        extra_deps=("${ingest.source}",), metrics=(METRICS_FILE,),
        plots=("map.png", "recall_vs_nprobe.png", "nn_similarity.png"),
    ),
    StageSpec("publish", "09_publish", ("index", "evaluate"), ("publish",)),
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


def dvc_plots(data_dir: str = "data") -> list[str]:
    """Top-level `plots:` of dvc.yaml: image files written by stages."""
    return [f"{data_dir}/{s.folder}/plots/{p}" for s in STAGES for p in s.plots]


def dvc_stages(data_dir: str = "data") -> dict:
    """The `stages:` mapping of dvc.yaml, derived from STAGES."""
    out: dict = {}
    for spec in STAGES:
        deps = [f"{data_dir}/{get_stage(i).folder}" for i in spec.inputs]
        deps += list(spec.extra_deps) + [spec.module, *spec.extra_modules, *CORE_MODULES]
        entry: dict = {
            "cmd": f"python -m tasks.{spec.name}",
            "deps": deps,
            "params": list(spec.params),
            # persist: DVC must not delete an output before the stage runs: the stage swaps
            # its folder in whole, and index / vector cache build on their previous state.
            "outs": [{o: {"persist": True}} for o in (f"{data_dir}/{spec.folder}",
                                                       *spec.extra_outs)],
        }
        if spec.metrics:
            entry["metrics"] = [{m: {"cache": False}} for m in spec.metrics]
        out[spec.name] = entry
    return out
