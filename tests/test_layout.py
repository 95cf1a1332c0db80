"""The package's shape: the command line sits on top, no import circles, no module past 600 lines.

Read from the source (the AST of ``restore/*.py``, imports at the top, inside functions and under
``TYPE_CHECKING`` alike), so nothing is imported here and a lazy import cannot hide a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "restore"
CLI = "restore.cli"
ENTRY_POINTS = {"restore.__main__"}  # ``python -m restore``: the one module that may import the CLI
MAX_LINES = 600


def module_name(path: Path, package: str) -> str:
    return package if path.stem == "__init__" else f"{package}.{path.stem}"


def import_graph(package_dir: Path, package: str = "restore") -> dict[str, set[str]]:
    """For every module of the package, the package's modules it imports (the package itself
    for ``from restore import __version__``)."""
    modules = {module_name(path, package): path for path in sorted(package_dir.glob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names if alias.name in modules)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: ``from . import x``, ``from .x import y``
                    base = ".".join(filter(None, [package, base]))
                if base == package:  # ``from restore import infer`` (a module) or ``__version__``
                    imported.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
                elif base in modules:
                    imported.add(base)
        graph[name] = imported - {name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import each other, directly or through others (strongly connected
    components of more than one module), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in sorted(graph.get(module, ())):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(cycles)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(PACKAGE_DIR)


def test_the_graph_is_read_from_every_kind_of_import(graph):
    # Top-level, function-level and TYPE_CHECKING imports all count (each of these exists today).
    assert "restore.infer_files" in graph["restore.cli"]  # function level
    assert "restore.chunking" in graph["restore.infer"]  # top level
    assert "restore.backends" in graph["restore.infer"]  # TYPE_CHECKING and function level
    assert "restore" in graph["restore.train_loop"]  # from restore import __version__


def test_nothing_in_the_library_imports_the_command_line(graph):
    importers = sorted(module for module, imported in graph.items() if CLI in imported and module not in ENTRY_POINTS)
    assert importers == [], f"{', '.join(importers)} import {CLI}: move what they need below it"


def test_no_import_cycles(graph):
    cycles = import_cycles(graph)
    assert cycles == [], "import circles: " + "; ".join(" <-> ".join(cycle) for cycle in cycles)


def test_no_module_is_longer_than_the_limit():
    lengths = {path.name: len(path.read_text(encoding="utf-8").splitlines()) for path in PACKAGE_DIR.glob("*.py")}
    too_long = {name: n for name, n in sorted(lengths.items()) if n > MAX_LINES}
    assert too_long == {}, f"modules over {MAX_LINES} lines (split them along their seams): {too_long}"


def test_the_checks_find_circles_and_cli_imports(tmp_path):
    """The checks above would fail on a package that breaks the rules (here a made-up one)."""
    package = tmp_path / "pkg"
    package.mkdir()
    files = {
        "__init__.py": "",
        "cli.py": "from pkg import library\n",
        "library.py": "def run():\n    from pkg.cli import main  # lazy, still a circle\n",
        "a.py": "from . import b\n",
        "b.py": "from .c import thing\n",
        "c.py": "import pkg.a\n",
        "leaf.py": "from pkg import __version__\n",
    }
    for name, text in files.items():
        (package / name).write_text(text, encoding="utf-8")
    graph = import_graph(package, "pkg")
    assert graph["pkg.library"] == {"pkg.cli"} and graph["pkg.leaf"] == {"pkg"}
    assert import_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"], ["pkg.cli", "pkg.library"]]
