"""The ordered list of stages: names, folders, inputs, params groups and files, kept once here.

The flow iterates it; `dvc.yaml` is generated from it (`embedpipe dvc-yaml`), and a test
holds the committed `dvc.yaml` to it. A stage's code deps are read from its imports, so
DVC calls a stage stale whenever any module it runs has changed. The same declaration
decides a stage's fingerprint (`fingerprint`): its params (less the keys listed in
`NEUTRAL_KEYS`), its inputs' fingerprints and the facts it declares; nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from tasks.core import catalog
from tasks.core.catalog import METRICS_FILE
from tasks.core.fingerprint import stage_fingerprint

TASKS_DIR = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class StageSpec:
    """One pipeline stage as DVC and the flow see it.

    `params` are params.yaml groups or dotted keys; `facts` name what else decides the
    output that only the stage can find out (the corpus digest, the model's identity), which
    it hands to `fingerprint` under exactly these names.
    """

    name: str
    folder: str
    inputs: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    extra_deps: tuple[str, ...] = ()
    extra_outs: tuple[str, ...] = ()
    facts: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        return f"tasks/{self.name}.py"

    def out_dir(self, params: Any, root: Path) -> Path:
        """The output folder under `params.paths.data` of the workspace `root`."""
        return Path(root) / params.paths.data / self.folder


# DVC depends on ingest's listing of ingest.source, never on the folder itself (DVC's hashing
# stops on a symlink loop or a name that is not UTF-8). The listing is the one out of the DVC
# stage `source` (not a pipeline stage: no params, no fingerprint), written by the flow before
# it asks DVC and by `dvc repro` when missing.
SOURCE_STAGE = "source"
SOURCE_MODULE = "tasks/documents/listing.py"
SOURCE_DEP = f"{{data}}/{catalog.SOURCE_LISTING}"

# DVC judges each stage's code by one digest file of its modules, written by the DVC stage
# `code` (tasks/core/code_digest.py), which depends on the package folder: dvc.lock, which
# DVC rewrites around every stage, names no module, where it listed each once per stage.
CODE_STAGE = "code"
CODE_MODULE = "tasks/core/code_digest.py"
CODE_DIR = "code"  # the digests' folder under the data folder

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
    StageSpec("ingest", "01_ingest", (), ("ingest",), extra_deps=(SOURCE_DEP,),
              extra_outs=("${paths.result_cache}/ingest",), facts=("corpus_sha256",)),
    StageSpec("clean", "02_clean", ("ingest",), ("clean",),
              extra_outs=("${paths.result_cache}/clean",)),
    StageSpec("chunk", "03_chunk", ("clean",), ("chunk", *_MODEL_KEYS),
              extra_outs=("${paths.result_cache}/chunk",), facts=("tokenizer_sha256", "budget")),
    StageSpec("finetune", "03_finetune", ("chunk",), ("finetune", *_FINETUNE_KEYS),
              facts=("base_model", "user_pairs_sha256")),
    StageSpec("encode", "04_encode", ("chunk", "finetune"), ("encode",),
              extra_outs=("${paths.vector_cache}",), facts=("model",)),
    StageSpec("reduce", "05_reduce", ("encode",), ("reduce",)),
    StageSpec("dedup", "06_dedup", ("reduce", "chunk"), ("dedup",)),
    StageSpec("index", "07_index", ("dedup", "reduce", "chunk", "finetune"),
              ("index", "search"), extra_deps=(SOURCE_DEP,), facts=("labels_sha256",)),
    StageSpec("evaluate", "08_evaluate", ("index", "dedup", "chunk", "ingest"), ("evaluate",),
              extra_deps=(SOURCE_DEP,), facts=("labels_sha256",)),
    StageSpec("publish", "09_publish", ("index", "evaluate"), ("publish",)),
    StageSpec("export", "10_export", ("index", "dedup", "evaluate"), ("export",)),
)
STAGE_NAMES = tuple(s.name for s in STAGES)
CODE_STAGES = (SOURCE_STAGE, *STAGE_NAMES)  # the stages with a code digest

# The keys that cannot change any output, each with why: left out of every fingerprint
# (DVC may still rerun a stage on them). tests/test_fingerprint.py changes every other key
# and sees its stages' fingerprints move, and runs the pipeline with each of these changed
# and finds the same outputs.
NEUTRAL_KEYS: dict[str, str] = {
    "paths": "where outputs, the vector cache and the run registry live, not what they hold",
    "run": "how and when a run executes (timeouts, log level, schedule, locking, executor): "
           "outputs are the same in one process and on Dask",
    "ingest.source": "a location: the corpus digest (relative paths and contents) stands "
                     "for what it holds",
    "ingest.s3_endpoint_url": "where the S3 corpus is served from; the digest stands for it",
    "ingest.s3_region": "where the S3 corpus is served from; the digest stands for it",
    "ingest.s3_max_attempts": "retries of a read, not what is read",
    "finetune.max_minutes": "a guard on training time: the planned steps run in full or the "
                            "stage fails, so it never decides the model",
}


def get_stage(name: str) -> StageSpec:
    """The stage called `name`; ValueError lists the valid names."""
    for spec in STAGES:
        if spec.name == name:
            return spec
    raise ValueError(f"unknown stage {name!r}; stages are: {', '.join(STAGE_NAMES)}")


def is_neutral(key: str) -> bool:
    """Whether the dotted `key` (or a group above it) is listed in `NEUTRAL_KEYS`."""
    parts = key.split(".")
    return any(".".join(parts[:i]) in NEUTRAL_KEYS for i in range(1, len(parts) + 1))


def _deciding(value: Any, key: str) -> Any:
    """`value` of the params `key` with the neutral keys below it left out."""
    if not isinstance(value, dict):
        return value
    return {k: _deciding(v, f"{key}.{k}") for k, v in value.items()
            if not is_neutral(f"{key}.{k}")}


def deciding_params(params: Any) -> dict[str, Any]:
    """Every params group less `NEUTRAL_KEYS`: what a record of the settings behind an
    output (the index's metadata.json) holds, so where and how a run ran never changes it."""
    raw = params.model_dump(mode="json") if hasattr(params, "model_dump") else params
    return {g: _deciding(v, g) for g, v in raw.items() if not is_neutral(g)}


def declared_params(name: str, params: Any) -> dict[str, Any]:
    """The values of the params stage `name` declares (the ones `dvc.yaml` lists), less
    `NEUTRAL_KEYS`: dotted key or group -> value. `params` is a `Params` or its JSON dump."""
    raw = params.model_dump(mode="json") if hasattr(params, "model_dump") else params
    out: dict[str, Any] = {}
    for key in get_stage(name).params:
        if is_neutral(key):
            continue
        value = raw
        for part in key.split("."):
            value = value[part]
        out[key] = _deciding(value, key)
    return out


def fingerprint(name: str, params: Any, inputs: dict[str, str], facts: dict[str, Any]
                ) -> str:
    """Stage `name`'s fingerprint from what the registry declares for it: its params
    (`declared_params`), its inputs' fingerprints and its facts (exactly the names it
    declares: ValueError on one missing or undeclared)."""
    spec = get_stage(name)
    if set(inputs) != set(spec.inputs):
        raise ValueError(f"stage {name!r}: fingerprint of inputs {sorted(inputs)}, but the "
                         f"registry declares {sorted(spec.inputs)}")
    if set(facts) != set(spec.facts):
        raise ValueError(f"stage {name!r}: facts {sorted(facts)} given, the registry declares "
                         f"{sorted(spec.facts)}; declare what decides an output in STAGES")
    return stage_fingerprint(name, declared_params(name, params), inputs, facts)


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


# Import statements of `tasks` modules, read by pattern: the flow reads every stage's imports
# before its first stage (the code digests), and parsing each module (ast) took 1.3 s of it.
_FROM = re.compile(r"^[ \t]*from[ \t]+(tasks(?:\.\w+)*)[ \t]+import[ \t]*(\([^)]*\)|[^\n;]*)",
                   re.M)
_IMPORT = re.compile(r"^[ \t]*import[ \t]+([^\n;]*)", re.M)
_COMMENT = re.compile(r"#[^\n]*")


@cache
def _imports(path: Path) -> frozenset[str]:
    """Modules of `tasks` that `path` imports anywhere (lazy imports inside functions too),
    each file read once a process (as `module_deps` is kept)."""
    text = path.read_text(encoding="utf-8")
    found: set[str] = set()
    for m in _FROM.finditer(text):
        found.add(m.group(1))
        names = _COMMENT.sub("", m.group(2)).strip("() \n").replace("\n", " ")
        found |= {f"{m.group(1)}.{n.split()[0]}" for n in names.split(",") if n.strip()}  # a module
    for m in _IMPORT.finditer(text):
        found |= {n.split()[0] for n in _COMMENT.sub("", m.group(1)).split(",")
                  if n.strip().startswith("tasks")}
    return frozenset(found)


def _import_closure(start: Path) -> tuple[str, ...]:
    """`start` and every `tasks` module it imports, transitively (repo paths, `start` first)."""
    seen, todo = {start}, [start]
    while todo:
        for module in _imports(todo.pop()):
            path = _module_file(module)
            if path is not None and path not in seen:
                seen.add(path)
                todo.append(path)
    rel = sorted(p.relative_to(TASKS_DIR.parent).as_posix() for p in seen - {start})
    return (start.relative_to(TASKS_DIR.parent).as_posix(), *rel)


@cache
def module_deps(stage: str) -> tuple[str, ...]:
    """The stage module and every `tasks` module it imports, transitively (repo paths)."""
    return _import_closure(TASKS_DIR / f"{get_stage(stage).name}.py")


@cache
def source_deps() -> tuple[str, ...]:
    """The modules of the DVC stage `source` (repo paths)."""
    return _import_closure(TASKS_DIR.parent / SOURCE_MODULE)


def digest_path(data_dir: str, stage: str) -> str:
    """Where `stage`'s code digest lies, under the data folder `data_dir` (repo-relative)."""
    return f"{data_dir}/{CODE_DIR}/{stage}.json"


def _command(module: str) -> str:
    return f"python -m {module.removesuffix('.py').replace('/', '.')}"


def _source_stage(data_dir: str) -> dict:
    """The DVC stage that writes the listing of ingest.source (see SOURCE_STAGE)."""
    return {"cmd": _command(SOURCE_MODULE), "deps": [digest_path(data_dir, SOURCE_STAGE)],
            "outs": [{SOURCE_DEP.format(data=data_dir): {"cache": False}}]}


def _code_stage(data_dir: str) -> dict:
    """The DVC stage that writes each stage's code digest (see CODE_STAGE). It depends on
    the whole package folder, one entry in dvc.lock (`__pycache__` is in .dvcignore): any
    file changed there reruns it, and the digests say which stages that reaches."""
    return {"cmd": _command(CODE_MODULE), "deps": [TASKS_DIR.name],
            "outs": [digest_path(data_dir, s) for s in CODE_STAGES]}


def dvc_plots(data_dir: str = "data") -> list[str]:
    """Top-level `plots:` of dvc.yaml: image files written by stages."""
    return [f"{data_dir}/{get_stage(p.stage).folder}/{p.name}" for p in catalog.PLOTS]


def dvc_stages(data_dir: str = "data") -> dict:
    """The `stages:` mapping of dvc.yaml, derived from STAGES and the stages' imports."""
    out: dict = {CODE_STAGE: _code_stage(data_dir), SOURCE_STAGE: _source_stage(data_dir)}
    for spec in STAGES:
        deps = [f"{data_dir}/{get_stage(i).folder}" for i in spec.inputs]
        deps += [*(d.format(data=data_dir) for d in spec.extra_deps),
                 digest_path(data_dir, spec.name)]
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
