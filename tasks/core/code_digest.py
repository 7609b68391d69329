"""Each stage's code as one small file DVC hashes: `<paths.data>/code/<stage>.json`, the MD5
of every `tasks` module the stage imports (`registry.module_deps`), by path.

DVC judges a change of code by a stage's deps. Listing every module of every stage there
put 364 paths into dvc.lock (47 KB on the sample), and DVC reads and rewrites the whole lock
through a round-trip YAML parser around every stage: its cost follows the lock's size. Each
stage now depends on its own digest file, and the DVC stage `code` (this module, like
`source`) depends on the `tasks` folder as a whole (one entry in dvc.lock; `__pycache__` is
in .dvcignore) and writes the digests: a stage is stale exactly when one of its modules
changed, as before, and dvc.lock names no module.
`embedpipe run`, `stage` and `status` write the digests before asking DVC; under `dvc
repro` the `code` stage does, when a module changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from tasks.core.config import load_params
from tasks.core.registry import (
    CODE_DEP,
    SOURCE_STAGE,
    STAGE_NAMES,
    module_deps,
    source_deps,
)

CODE_STAGES = (SOURCE_STAGE, *STAGE_NAMES)  # the stages with a digest
CODE_DIR = CODE_DEP.split("/")[1]  # the digests' folder under the data folder


def digest_path(data: str, stage: str) -> str:
    """Where `stage`'s digest lies, under the data folder `data` (relative to the root)."""
    return CODE_DEP.format(data=data, stage=stage)


def stage_modules(stage: str) -> tuple[str, ...]:
    """The modules `stage` runs (repository paths)."""
    return source_deps() if stage == SOURCE_STAGE else module_deps(stage)


def digest_text(root: Path, stage: str) -> str:
    """The digest file's text: module path -> MD5 of its bytes in the workspace `root`,
    sorted, one per line."""
    md5 = {m: hashlib.md5((root / m).read_bytes(), usedforsecurity=False).hexdigest()
           for m in stage_modules(stage)}
    return json.dumps(md5, indent=0, sort_keys=True) + "\n"


def write_code_digests(root: Path, data: str) -> bool:
    """Write every stage's digest under `data` of the workspace `root`, each replaced in one
    rename and only when its content changes; whether any changed."""
    changed = False
    for stage in CODE_STAGES:
        text = digest_text(root, stage)
        path = root / digest_path(data, stage)
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        changed = True
    return changed


def changed_modules(old: str, new: str) -> dict[str, str]:
    """Module -> `modified`, `new` or `deleted` (DVC's words) for every module whose digest
    differs between two digest texts, sorted by path."""
    a, b = json.loads(old), json.loads(new)
    return {m: "new" if m not in a else "deleted" if m not in b else "modified"
            for m in sorted(a.keys() | b.keys()) if a.get(m) != b.get(m)}


def main() -> None:
    """The DVC stage `code`: write the digests of the workspace `$DVC_ROOT`."""
    root = Path(os.environ.get("DVC_ROOT", ".")).resolve()
    write_code_digests(root, load_params(root / "params.yaml").paths.data)


if __name__ == "__main__":
    main()
