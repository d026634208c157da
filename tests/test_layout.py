"""The test suite's own layout: test modules share helpers through tests.support and
tests.fakes, never by importing one another or conftest (whose fixtures pytest injects)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_test_module_imports_another_or_conftest() -> None:
    offenders = {}
    for path in sorted(TESTS.rglob("*.py")):
        bad = sorted(
            name for name in imported_modules(path) if name.startswith(("tests.test_", "tests.conftest"))
        )
        if bad:
            offenders[str(path.relative_to(TESTS))] = bad
    assert offenders == {}, "move shared helpers to tests/support/ (or tests/fakes/)"


def test_the_check_sees_such_an_import(tmp_path: Path) -> None:
    module = tmp_path / "test_x.py"
    module.write_text("from tests.conftest import Servers\nimport tests.test_web\n")
    assert imported_modules(module) >= {"tests.conftest", "tests.test_web"}


def test_no_product_module_takes_part_in_an_import_cycle() -> None:
    import grimp

    graph = grimp.build_graph("core", "db", "jobs", "listener", "falback", "devkit")
    cycles = sorted(
        (module, imported)
        for module in graph.modules
        for imported in graph.find_modules_directly_imported_by(module)
        if graph.chain_exists(importer=imported, imported=module)
    )
    assert cycles == []
