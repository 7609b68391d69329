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
from tasks.core.io import write_text_if_changed
from tasks.core.registry import CODE_STAGES, SOURCE_STAGE, digest_path, module_deps, source_deps


def stage_modules(stage: str) -> tuple[str, ...]:
    """The modules `stage` runs (repository paths)."""
    return source_deps() if stage == SOURCE_STAGE else module_deps(stage)


def write_code_digests(root: Path, data: str) -> bool:
    """Write every stage's digest under `data` of the workspace `root` (module path -> MD5
    of its bytes there, sorted, one per line; each module read once), each replaced in one
    rename and only when its content changes; whether any changed."""
    modules = {m for stage in CODE_STAGES for m in stage_modules(stage)}
    md5 = {m: hashlib.md5((root / m).read_bytes(), usedforsecurity=False).hexdigest()
           for m in modules}
    changed = False
    for stage in CODE_STAGES:
        text = json.dumps({m: md5[m] for m in stage_modules(stage)}, indent=0,
                          sort_keys=True) + "\n"
        changed |= write_text_if_changed(root / digest_path(data, stage), text)
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
