"""The fast tier's guard: a test that starts a process or reaches a database fails there.

``make test-fast`` promises pure and in-memory tests.  A list of files alone cannot keep
that promise: a listed file can grow a test that starts a server process, or a store
test can reach PostgreSQL.  So while the fast tier runs, the guard watches for both,
raises ``FastTierViolation`` at the call, and records it; the ``FastTier`` plugin below
then fails the test even if the code under test caught the exception.

What it watches:

- Processes, through CPython's audit events (``subprocess.Popen``, ``os.fork``,
  ``os.forkpty``, ``os.posix_spawn``, ``os.spawn``, ``os.system``, ``os.exec``), through
  ``_posixsubprocess.fork_exec`` (multiprocessing's spawn and forkserver starts call it
  without an audit event), and through uvloop's ``subprocess_exec`` and
  ``subprocess_shell`` (libuv spawns without one).
- Databases: a ``socket.connect`` audit event to PostgreSQL's, MariaDB's or Redis's
  port (on any host) or to their Unix sockets, and the same addresses passed to
  uvloop's ``create_connection``, ``create_unix_connection`` and ``sock_connect``
  (libuv connects without an audit event).

Other TCP connections are allowed: in-process servers on 127.0.0.1 are part of the
fast tier.  Audit hooks cannot be removed, so the guard is installed once per process
and does nothing unless ``active`` is true.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
import traceback
from collections.abc import Callable, Generator, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

#: Ports of the database servers the full suite talks to.
DATABASE_PORTS = {5432: "PostgreSQL", 3306: "MariaDB", 6379: "Redis"}
#: Substrings of those servers' Unix socket paths.
DATABASE_SOCKETS = {
    ".s.PGSQL.": "PostgreSQL",
    "mysqld": "MariaDB",
    "mysql.sock": "MariaDB",
    "redis": "Redis",
}
#: Markers of tests that need something the fast tier forbids: left out of it.
FULL_SUITE_MARKERS = ("interop", "postgres", "redis", "mysql")
#: What the whole fast tier may take on the reference machine (2 cores, shared).
BUDGET_S = 60.0
#: Audit events that start a process (or replace this one).
PROCESS_EVENTS = frozenset(
    {
        "subprocess.Popen",
        "os.fork",
        "os.forkpty",
        "os.posix_spawn",
        "os.spawn",
        "os.system",
        "os.exec",
    }
)


class FastTierViolation(RuntimeError):
    """A test of the fast tier started a process or connected to a database server.

    A RuntimeError rather than an OSError: code that retries on connection errors must
    not swallow it and keep trying.
    """


def database_at(address: object) -> str | None:
    """The database server ``address`` (a socket address) belongs to, or None."""
    if isinstance(address, tuple) and len(address) >= 2 and isinstance(address[1], int):
        return DATABASE_PORTS.get(address[1])
    if isinstance(address, bytes):
        address = address.decode(errors="replace")
    if isinstance(address, str):
        for part, name in DATABASE_SOCKETS.items():
            if part in address:
                return name
    return None


class Guard:
    """Records, and refuses, process starts and database connections while active."""

    def __init__(self) -> None:
        self.active = False
        self.installed = False
        self._lock = threading.Lock()
        self._violations: list[str] = []

    def install(self) -> None:
        """Hook the audit events and the entry points that bypass them (once)."""
        if self.installed:
            return
        self.installed = True
        sys.addaudithook(self._audit)
        import _posixsubprocess

        _posixsubprocess.fork_exec = self._refusing(
            _posixsubprocess.fork_exec, lambda *a, **k: "a process (_posixsubprocess.fork_exec)"
        )
        try:
            import uvloop
        except ImportError:
            return
        self._wrap_uvloop(uvloop.Loop)

    def _wrap_uvloop(self, loop: type) -> None:
        def process(*args: Any, **kwargs: Any) -> str:
            return "a process (uvloop subprocess)"

        def tcp(*args: Any, **kwargs: Any) -> str | None:
            # create_connection(self, protocol_factory, host=None, port=None, ...)
            port = kwargs.get("port", args[3] if len(args) > 3 else None)
            host = kwargs.get("host", args[2] if len(args) > 2 else None)
            name = DATABASE_PORTS.get(port) if isinstance(port, int) else None
            return f"{name} at {host}:{port} (uvloop)" if name else None

        def unix(*args: Any, **kwargs: Any) -> str | None:
            path = kwargs.get("path", args[2] if len(args) > 2 else None)
            name = database_at(path)
            return f"{name} at {path} (uvloop)" if name else None

        def sock(*args: Any, **kwargs: Any) -> str | None:
            address = kwargs.get("address", args[2] if len(args) > 2 else None)
            name = database_at(address)
            return f"{name} at {address} (uvloop)" if name else None

        for method, check in (
            ("subprocess_exec", process),
            ("subprocess_shell", process),
            ("create_connection", tcp),
            ("create_unix_connection", unix),
            ("sock_connect", sock),
        ):
            setattr(loop, method, self._refusing(getattr(loop, method), check))

    def _refusing(
        self, original: Callable[..., Any], check: Callable[..., str | None]
    ) -> Callable[..., Any]:
        """``original``, refusing the calls ``check`` names while the guard is active."""

        def guarded(*args: Any, **kwargs: Any) -> Any:
            if self.active:
                what = check(*args, **kwargs)
                if what is not None:
                    self._refuse(what)
            return original(*args, **kwargs)

        guarded.__wrapped__ = original  # type: ignore[attr-defined]
        return guarded

    def _audit(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.active:
            return
        if event in PROCESS_EVENTS:
            shown = args[1] if event == "subprocess.Popen" and len(args) > 1 else args[:1]
            self._refuse(f"a process ({event} {shown!r})")
        elif event == "socket.connect":
            name = database_at(args[1])
            if name is not None:
                # socket.create_connection closes its socket only on OSError: close it
                # here, or the refusal leaks it (and pytest reports the leak instead).
                args[0].close()
                self._refuse(f"{name} at {args[1]!r}")

    def _refuse(self, what: str) -> None:
        where = "".join(traceback.format_stack(limit=8)[:-2])
        with self._lock:
            self._violations.append(f"started {what}\n{where}")
        raise FastTierViolation(f"the fast tier allows no processes or databases: {what}")

    def take(self) -> list[str]:
        """The violations recorded since the last call, and forget them."""
        with self._lock:
            taken, self._violations = self._violations, []
        return taken

    @contextlib.contextmanager
    def watching(self) -> Iterator[Guard]:
        """Active for the block (installed first if need be), then as before."""
        self.install()
        before, self.active = self.active, True
        try:
            yield self
        finally:
            self.active = before


#: The one guard of this process (audit hooks are per process).
GUARD = Guard()


class FastTier:
    """The pytest plugin of the fast tier: collects only ``files``, under the guard.

    ``tests/conftest.py`` registers it for ``--fast``; tests/test_tiers_run.py registers
    it on a throwaway test file to show that it fails what it must.
    """

    def __init__(self, root: Path, files: Iterable[str], guard: Guard = GUARD) -> None:
        self.root = root
        self.files = frozenset(files)
        self.guard = guard
        self.started = time.monotonic()

    def pytest_configure(self, config: pytest.Config) -> None:
        missing = sorted(f for f in self.files if not (self.root / f).is_file())
        if missing:
            # A stale entry would shrink the tier without anyone noticing.
            raise pytest.UsageError(f"the fast tier lists missing files: {missing}")
        self.guard.install()
        self.guard.active = True

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.guard.active = False

    def pytest_ignore_collect(self, collection_path: Path) -> bool | None:
        """Skip every test file not listed, and every directory without a listed one."""
        try:
            rel = collection_path.relative_to(self.root).as_posix()
        except ValueError:
            return None
        if rel == ".":
            return None
        if collection_path.is_dir():
            return None if any(f.startswith(rel + "/") for f in self.files) else True
        if collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
            return None if rel in self.files else True
        return None

    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        """Leave out the tests marked as needing peers or databases."""
        keep: list[pytest.Item] = []
        drop: list[pytest.Item] = []
        for item in items:
            full = any(item.get_closest_marker(m) for m in FULL_SUITE_MARKERS)
            (drop if full else keep).append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        """Fail the phase (setup, call, teardown) in which the guard refused something."""
        report = yield
        refused = self.guard.take()
        if refused:
            text = "\n".join(refused)
            if report.failed:
                report.sections.append(("fast tier guard", text))
            else:
                report.outcome = "failed"
                report.longrepr = f"the fast tier's guard refused, and the test went on:\n{text}"
        return report

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        took = time.monotonic() - self.started
        over = took > BUDGET_S
        terminalreporter.write_line(
            f"fast tier: {len(self.files)} files in {took:.1f} s (budget {BUDGET_S:.0f} s"
            + (": over it, move the slowest files to the full suite)" if over else ")"),
            yellow=over,
        )
