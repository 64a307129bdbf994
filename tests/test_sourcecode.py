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


def test_core_import_stays_light() -> None:
    # `import gearshift` (client, worker, admin) must not pull in the optional backends,
    # the HTTP stack or multiprocessing; each is imported where it is used.
    import subprocess
    import sys

    heavy = ["aiohttp", "asyncpg", "redis", "asyncmy", "prometheus_client", "multiprocessing"]
    code = f"import sys, gearshift; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
