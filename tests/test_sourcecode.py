"""Rules about the source tree itself, run as tests."""

from __future__ import annotations

import ast
import pathlib

import gearshift

SRC = pathlib.Path(gearshift.__file__).parent
FORBIDDEN_IN_PROTOCOL = {"asyncio", "socket", "time", "logging", "selectors", "threading"}


def _imports(path: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_protocol_package_is_sans_io() -> None:
    for path in sorted((SRC / "protocol").rglob("*.py")):
        bad = _imports(path) & FORBIDDEN_IN_PROTOCOL
        assert not bad, f"{path.name} imports {bad}"


def test_all_is_sorted_and_complete() -> None:
    names = gearshift.__all__
    assert names == sorted(names)
    for name in names:
        assert hasattr(gearshift, name), name


def test_lazy_names_are_the_public_names() -> None:
    # gearshift/__init__.py names each public object three times (the TYPE_CHECKING
    # imports, the table of where it lives, __all__); a name missing from one of them
    # would be invisible to mypy, fail on first use, or be left out of `import *`.
    lazy = set(gearshift._WHERE)
    assert set(gearshift.__all__) == lazy | {"__version__"}
    checked = ast.parse((SRC / "__init__.py").read_text())
    block = next(n for n in checked.body if isinstance(n, ast.If))
    typed = {
        a.asname or a.name
        for n in ast.walk(block)
        if isinstance(n, ast.ImportFrom)
        for a in n.names
    }
    assert typed == lazy
    assert set(dir(gearshift)) >= set(gearshift.__all__)
