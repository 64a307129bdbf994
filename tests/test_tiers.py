"""The fast tier's list and guard: what the guard refuses, and what it lets through.

These run in the fast tier themselves: each refusal is made on purpose inside
``GUARD.watching()`` and taken back with ``GUARD.take()``, so the tier does not fail
the test for it.  None of them gets as far as starting a process or reaching a
database: the guard refuses before the call.  tests/test_tiers_run.py shows the whole
plugin failing tests that swallow the refusal.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from multiprocessing.context import ForkContext, ForkServerContext, SpawnContext
from pathlib import Path
from typing import Any

import pytest
import uvloop

from tests.fast_tier import FAST_FILES
from tests.guard import GUARD, FastTierViolation, Guard, database_at

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def guard() -> Iterator[Guard]:
    """The process's guard, active for the test; the test takes its own refusals."""
    with GUARD.watching() as g:
        yield g
    leftover = GUARD.take()
    assert leftover == [], "a refusal the test did not expect"


def refused(guard: Guard, call: Callable[[], Any]) -> str:
    """Run ``call``, which the guard must refuse; return what it recorded."""
    with pytest.raises(FastTierViolation):
        call()
    taken = guard.take()
    assert len(taken) == 1, taken
    return taken[0]


def test_the_list_is_sorted_unique_and_names_test_files() -> None:
    assert FAST_FILES == sorted(set(FAST_FILES))
    for name in FAST_FILES:
        path = ROOT / name
        assert path.is_file() and path.name.startswith("test_"), name


def test_subprocess_is_refused(guard: Guard) -> None:
    assert "subprocess.Popen" in refused(guard, lambda: subprocess.run(["true"]))
    assert "a process" in refused(guard, lambda: os.system("true"))


def test_fork_is_refused(guard: Guard) -> None:
    def fork() -> None:
        pid = os.fork()
        if pid == 0:  # the guard failed: leave the child at once
            os._exit(0)
        os.waitpid(pid, 0)

    assert "os.fork" in refused(guard, fork)


CONTEXTS: dict[str, SpawnContext | ForkServerContext | ForkContext] = {
    "spawn": multiprocessing.get_context("spawn"),
    "forkserver": multiprocessing.get_context("forkserver"),
    "fork": multiprocessing.get_context("fork"),
}


@pytest.mark.parametrize("method", sorted(CONTEXTS))
def test_multiprocessing_is_refused(guard: Guard, method: str) -> None:
    process = CONTEXTS[method].Process(target=print)
    with pytest.raises(FastTierViolation):
        process.start()
    assert guard.take()


def test_asyncio_subprocesses_are_refused_on_both_loops(guard: Guard) -> None:
    async def start() -> None:
        proc = await asyncio.create_subprocess_exec("true")
        await proc.wait()

    assert "subprocess.Popen" in refused(guard, lambda: asyncio.run(start()))
    assert "uvloop" in refused(guard, lambda: uvloop.run(start()))


@pytest.mark.parametrize(
    ("port", "name"), [(5432, "PostgreSQL"), (3306, "MariaDB"), (6379, "Redis")]
)
def test_database_ports_are_refused(guard: Guard, port: int, name: str) -> None:
    def connect() -> None:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()

    assert name in refused(guard, connect)

    async def open_connection() -> None:
        _, writer = await asyncio.open_connection("localhost", port)
        writer.close()

    assert name in refused(guard, lambda: asyncio.run(open_connection()))
    assert "uvloop" in refused(guard, lambda: uvloop.run(open_connection()))


def test_database_unix_sockets_are_refused(guard: Guard) -> None:
    def connect() -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect("/nonexistent/.s.PGSQL.5432")

    assert "PostgreSQL" in refused(guard, connect)
    assert database_at("/run/mysqld/mysqld.sock") == "MariaDB"
    assert database_at(b"/var/run/redis/redis-server.sock") == "Redis"
    assert database_at(("127.0.0.1", 4730)) is None


def test_in_process_servers_on_loopback_are_allowed(guard: Guard) -> None:
    async def echo_once() -> bytes:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.read(100))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"ping")
            reply = await reader.read(100)
            writer.close()
        return reply

    assert asyncio.run(echo_once()) == b"ping"
    assert uvloop.run(echo_once()) == b"ping"
    assert guard.take() == []
