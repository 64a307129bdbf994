"""The fast tier's plugin, run for real on throwaway test files.

A pytest run in a child process (so this file is the full suite's, not the fast
tier's) registers ``tests.guard.FastTier`` on a small list of its own, as
``tests/conftest.py`` does for ``--fast`` with ``tests/fast_tier.py``.  It shows that a
listed test fails when it starts a process or reaches a database, even when it catches
the guard's exception, and that unlisted files and marked tests are left out.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONFTEST = """
from tests.guard import FastTier

LISTED = {listed!r}

def pytest_configure(config):
    config.addinivalue_line("markers", "postgres: needs PostgreSQL")
    config.pluginmanager.register(FastTier(config.rootpath, LISTED), "fast-tier")
"""

LISTED_TESTS = """
import socket
import subprocess

import pytest


def test_clean():
    assert sum(range(4)) == 6


def test_process_swallowed():
    try:
        subprocess.run(["true"])
    except Exception:
        pass


def test_process_uncaught():
    subprocess.run(["true"])


def test_database_swallowed():
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1)
    except Exception:
        pass


@pytest.fixture
def server_process():
    subprocess.run(["true"])


def test_process_in_a_fixture(server_process):
    pass


@pytest.mark.postgres
def test_marked_for_the_full_suite():
    raise AssertionError("deselected in the fast tier, never run")
"""

UNLISTED_TESTS = """
def test_not_listed():
    raise AssertionError("not collected in the fast tier")
"""


def run_tier(tmp_path: Path, listed: list[str]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(CONFTEST.format(listed=listed))
    (tmp_path / "test_listed.py").write_text(LISTED_TESTS)
    (tmp_path / "test_unlisted.py").write_text(UNLISTED_TESTS)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_guard_fails_what_it_refuses_even_when_caught(tmp_path: Path) -> None:
    done = run_tier(tmp_path, ["test_listed.py"])
    out = done.stdout
    assert done.returncode == 1, out
    assert "PASSED test_listed.py::test_clean" in out
    for name in ("process_swallowed", "process_uncaught", "database_swallowed"):
        assert f"FAILED test_listed.py::test_{name}" in out, out
    assert "ERROR test_listed.py::test_process_in_a_fixture" in out
    assert "the fast tier's guard refused, and the test went on" in out
    assert "PostgreSQL at ('127.0.0.1', 5432)" in out
    assert "test_not_listed" not in out
    assert "test_marked_for_the_full_suite" not in out
    assert "3 failed, 1 passed, 1 deselected, 1 error" in out
    assert "fast tier: 1 files in" in out


def test_a_listed_file_that_is_gone_stops_the_run(tmp_path: Path) -> None:
    done = run_tier(tmp_path, ["test_listed.py", "test_renamed.py"])
    assert done.returncode != 0
    assert "the fast tier lists missing files: ['test_renamed.py']" in done.stderr
