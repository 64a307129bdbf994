"""Who may import what in the server: the core knows neither the HTTP add-on nor the
cluster, the scheduler knows neither asyncio nor the stores.  Reads source, no sockets."""

from __future__ import annotations

import ast
import pathlib

import pytest

import gearshift

SERVER = pathlib.Path(gearshift.__file__).parent / "server"


def _imports(name: str) -> set[str]:
    """Every module ``server/<name>.py`` imports, at any depth (TYPE_CHECKING included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse((SERVER / f"{name}.py").read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _under(found: set[str], prefix: str) -> set[str]:
    return {m for m in found if m == prefix or m.startswith(prefix + ".")}


@pytest.mark.parametrize("name", ["server", "connection", "scheduler", "model", "durable"])
def test_the_core_imports_no_optional_service(name: str) -> None:
    found = _imports(name)
    assert not _under(found, "gearshift.http"), found
    assert not _under(found, "gearshift.server.cluster"), found


@pytest.mark.parametrize("name", ["scheduler", "model", "wakeups"])
def test_policy_and_data_do_no_io(name: str) -> None:
    found = _imports(name)
    assert not _under(found, "gearshift.store"), found
    assert not _under(found, "asyncio"), found
    assert not _under(found, "socket"), found
