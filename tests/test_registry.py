from __future__ import annotations

from pathlib import Path

from flows.dvc_bridge import render_dvc_yaml
from tasks.core.registry import STAGE_NAMES, downstream_of, get_stage

REPO = Path(__file__).resolve().parents[1]


def test_committed_dvc_yaml_matches_registry():
    assert (REPO / "dvc.yaml").read_text(encoding="utf-8") == render_dvc_yaml("data"), (
        "dvc.yaml is out of date: run `embedpipe dvc-yaml`")


def test_every_stage_has_a_module_with_main():
    for name in STAGE_NAMES:
        text = (REPO / get_stage(name).module).read_text(encoding="utf-8")
        assert f"def {name}_task(" in text and 'if __name__ == "__main__":' in text


def test_downstream_of_reduce():
    assert downstream_of("reduce") == ("reduce", "dedup", "index", "evaluate", "publish",
                                      "export")


def test_unknown_stage_lists_valid_names():
    import pytest

    with pytest.raises(ValueError, match="stages are: ingest, clean, chunk"):
        get_stage("embed")


def test_a_module_edit_changes_the_digest_of_exactly_the_stages_that_import_it(tmp_path):
    """Each stage's code digest covers its import closure: editing one module rewrites the
    digests of the stages that import it, directly or not, and no other."""
    import shutil

    from tasks.core.code_digest import CODE_STAGES, digest_path, stage_modules, write_code_digests

    shutil.copytree(REPO / "tasks", tmp_path / "tasks",
                    ignore=shutil.ignore_patterns("__pycache__"))
    assert write_code_digests(tmp_path, "data")
    assert not write_code_digests(tmp_path, "data")  # nothing changed: nothing rewritten
    before = {s: (tmp_path / digest_path("data", s)).read_text() for s in CODE_STAGES}
    module = "tasks/query/lexical.py"
    with (tmp_path / module).open("a") as f:
        f.write("# edited\n")
    assert write_code_digests(tmp_path, "data")
    changed = {s for s in CODE_STAGES
               if (tmp_path / digest_path("data", s)).read_text() != before[s]}
    expected = {s for s in CODE_STAGES if module in stage_modules(s)}
    assert changed == expected
    assert {"index", "evaluate"} <= expected and "ingest" not in expected


def test_why_it_runs_names_the_modules_behind_a_digest_change(tmp_path):
    """A stage stale because its code digest changed is said to run for the modules that
    changed: the digest dvc.lock recorded is read back from DVC's cache; where the cache
    lacks it, the digest file is named."""
    import hashlib
    import json

    from flows.dvc_bridge import named_modules

    old = json.dumps({"tasks/dedup.py": "a" * 32, "tasks/core/io.py": "b" * 32}) + "\n"
    new = json.dumps({"tasks/dedup.py": "c" * 32, "tasks/core/io.py": "b" * 32,
                      "tasks/core/new.py": "d" * 32}) + "\n"
    digest = "data/code/dedup.json"
    (tmp_path / "data/code").mkdir(parents=True)
    (tmp_path / digest).write_text(new)
    md5 = hashlib.md5(old.encode()).hexdigest()
    (tmp_path / "dvc.lock").write_text(
        f"schema: '2.0'\nstages:\n  dedup:\n    cmd: python -m tasks.dedup\n    deps:\n"
        f"    - path: {digest}\n      md5: {md5}\n      size: {len(old)}\n")
    changes = [{"changed deps": {digest: "modified", "data/05_reduce": "modified"}}]
    assert named_modules(tmp_path, "dedup", changes) == changes  # not in the cache
    cached = tmp_path / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
    cached.parent.mkdir(parents=True)
    cached.write_text(old)
    named = [{"changed deps": {"data/05_reduce": "modified", "tasks/core/new.py": "new",
                               "tasks/dedup.py": "modified"}}]
    assert named_modules(tmp_path, "dedup", changes) == named
    elsewhere = tmp_path / "elsewhere/files/md5" / md5[:2] / md5[2:]  # a cache.dir of its own
    elsewhere.parent.mkdir(parents=True)
    cached.rename(elsewhere)
    assert named_modules(tmp_path, "dedup", changes) == changes
    (tmp_path / ".dvc/config").write_text("[core]\n    autostage = false\n"
                                          "[cache]\n    dir = ../elsewhere\n")
    assert named_modules(tmp_path, "dedup", changes) == named


def test_imports_read_by_pattern_are_those_python_parses():
    """The stages' imports are read by pattern (fast, before the first stage); on every
    module of the project they are the `tasks` imports Python's own parser finds."""
    import ast

    from tasks.core.registry import _imports

    for path in sorted((REPO / "tasks").rglob("*.py")):
        parsed: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                parsed |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                parsed |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        assert set(_imports(path)) == {m for m in parsed if m.startswith("tasks")}, path


def test_status_during_a_run_leaves_the_code_digests_as_that_run_wrote_them(tmp_path, capsys):
    """A module edited while a run holds the workspace: `embedpipe status` must not rewrite
    the digest the run will record its stages with (they ran the code as it was)."""
    from flows.cli import main
    from tasks.core.lock import workspace_lock
    from tests.workspace import make_workspace

    ws = make_workspace(tmp_path / "ws")
    digest = ws / "data/code/dedup.json"
    assert main(["--root", str(ws), "status"]) == 0
    written = digest.read_bytes()
    digest.write_text("{}")  # what a run wrote before the edit, as far as this test goes
    with workspace_lock(ws, "embedpipe run"):
        assert main(["--root", str(ws), "status"]) == 0
    assert digest.read_text() == "{}"
    err = capsys.readouterr().err
    assert "a run holds the workspace (pid" in err and "(embedpipe run)" in err
    assert main(["--root", str(ws), "status"]) == 0
    assert digest.read_bytes() == written
