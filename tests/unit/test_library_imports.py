"""The library stays a library: nothing under ``r2m/`` imports orchestration (Prefect, DVC, the stages, the flows)."""

from __future__ import annotations

import ast
from pathlib import Path

LIBRARY = Path(__file__).resolve().parents[2] / "r2m"
FORBIDDEN = ("prefect", "dvc", "tasks", "flows")
SKIP = {
    "cli.py",  # moving to flows/cli.py
}


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, module)`` of every import statement in ``tree``, also those inside functions; relative imports are
    inside the package and give no name here."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def is_forbidden(module: str) -> bool:
    return module.split(".")[0] in FORBIDDEN


def test_imported_modules_finds_nested_imports():
    tree = ast.parse("import os\ndef f():\n    from tasks.common import Paths\n    import prefect.flows as pf\n")
    assert imported_modules(tree) == [(1, "os"), (3, "tasks.common"), (4, "prefect.flows")]
    assert [is_forbidden(m) for _, m in imported_modules(tree)] == [False, True, True]
    assert not is_forbidden("dvclive_like") and not is_forbidden("r2m.tasks")


def test_library_imports_no_orchestration():
    modules = sorted(p for p in LIBRARY.rglob("*.py") if p.relative_to(LIBRARY).as_posix() not in SKIP)
    assert len(modules) > 10  # the walk found the library
    bad = [
        f"{p.relative_to(LIBRARY.parent).as_posix()}:{line}: imports {module}"
        for p in modules
        for line, module in imported_modules(ast.parse(p.read_text(), filename=str(p)))
        if is_forbidden(module)
    ]
    assert not bad, "the library imports orchestration:\n" + "\n".join(bad)
