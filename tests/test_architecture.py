"""The shape the code keeps: stages on top, packages that import only what their docstring
allows, no circles, small functions and thin tasks."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tasks.core.registry import STAGE_NAMES

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "tasks"
PACKAGES = sorted(p.name for p in TASKS.iterdir() if (p / "__init__.py").is_file())


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


def tasks_imports(path: Path) -> set[str]:
    """The `tasks` modules or packages `path` imports (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    modules = {module_name(p) for p in TASKS.rglob("*.py")}
    return {m for m in found if m in modules or m.removesuffix(".__init__") in modules}


def allowed_packages(package: str) -> set[str]:
    """What the package's `__init__` docstring says it may import (`Imports: ...`)."""
    doc = ast.get_docstring(ast.parse((TASKS / package / "__init__.py").read_text()))
    line = re.search(r"Imports: ([^\n]*(?:\n[^\n]+)*)", doc or "")
    assert line, f"tasks/{package}/__init__.py: its docstring must say what it may import"
    return {package} | set(re.findall(r"`tasks\.(\w+)`", line.group(1)))


def test_packages_are_the_documented_ones():
    assert PACKAGES == ["core", "documents", "duplicates", "encoders", "evaluation", "indexing",
                        "query", "storage", "tuning"]
    top = sorted(p.stem for p in TASKS.glob("*.py") if p.stem != "__init__")
    assert top == sorted(STAGE_NAMES)


@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_no_stage_imports_another_stage(stage):
    others = {f"tasks.{s}" for s in STAGE_NAMES if s != stage}
    assert not tasks_imports(TASKS / f"{stage}.py") & others


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_what_they_declare(package):
    allowed = allowed_packages(package)
    for path in (TASKS / package).glob("*.py"):
        used = {m.split(".")[1] for m in tasks_imports(path)}
        assert used <= allowed, f"{path.relative_to(REPO)} imports {sorted(used - allowed)}"


def test_import_graph_has_no_circle():
    graph = {module_name(p): {m for m in tasks_imports(p)} for p in TASKS.rglob("*.py")}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            assert state.get(nxt) != 1, f"import circle: {' -> '.join([*path, node, nxt])}"
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


def test_package_inits_hold_only_a_docstring():
    for init in TASKS.rglob("__init__.py"):
        body = ast.parse(init.read_text(encoding="utf-8")).body
        assert len(body) <= 1 and all(isinstance(n, ast.Expr) for n in body), init


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def _body_lines(fn: ast.FunctionDef) -> int:
    """Lines of a function below its signature and docstring."""
    body = fn.body
    has_doc = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
    first = body[1] if has_doc and len(body) > 1 else body[0]
    return fn.end_lineno - first.lineno + 1


def test_functions_stay_small_and_tasks_thin():
    files = [*TASKS.rglob("*.py"), *(REPO / "flows").glob("*.py")]
    long = [f"{p.relative_to(REPO)}:{fn.name} ({fn.end_lineno - fn.lineno + 1} lines)"
            for p in files for fn in _functions(p) if fn.end_lineno - fn.lineno + 1 > 40]
    assert not long, f"functions over 40 lines: {long}"
    fat = [f"{stage}_task ({_body_lines(fn)} lines)" for stage in STAGE_NAMES
           for fn in _functions(TASKS / f"{stage}.py")
           if fn.name == f"{stage}_task" and _body_lines(fn) > 25]
    assert not fat, f"task bodies over 25 lines: {fat}"


def test_task_bodies_write_no_try_except():
    for stage in STAGE_NAMES:
        fn = next(f for f in _functions(TASKS / f"{stage}.py") if f.name == f"{stage}_task")
        assert not any(isinstance(n, ast.Try) for n in ast.walk(fn)), stage
