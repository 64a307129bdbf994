"""Fixtures for client, worker and admin tests: real servers, running workers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gearshift import AsyncWorker
from tests.conftest import ServerFactory
from tests.procs import ServerProcess


@pytest.fixture
def server(make_any_server: ServerFactory) -> ServerProcess:
    """One real server: gearshift or C++ gearmand (the test runs against both)."""
    return make_any_server()


@contextlib.asynccontextmanager
async def running(worker: AsyncWorker) -> AsyncIterator[AsyncWorker]:
    """Run ``worker`` in a task for the block; stop it (gracefully) afterwards."""
    task = asyncio.create_task(worker.run(install_signal_handlers=False))
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while len(worker.connected) < len(worker.servers):
            assert asyncio.get_running_loop().time() < deadline, "worker did not connect"
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield worker
    finally:
        await worker.stop()
        await asyncio.wait_for(task, 30)


def make_worker(
    servers: Any, functions: dict[str, Callable[..., Any]], **kwargs: Any
) -> AsyncWorker:
    worker = AsyncWorker(servers, **kwargs)
    for name, handler in functions.items():
        worker.register(name, handler)
    return worker
