"""The in-memory "store": nothing survives a restart (gearmand's ``-q builtin``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from gearshift.records import StoredJob
from gearshift.store.base import Store


class MemoryStore(Store):
    """Keeps nothing; the server holds its jobs in memory anyway."""

    name = "memory"
    persistent = False

    async def add(self, job: StoredJob) -> None:
        return None

    async def done(self, job: StoredJob) -> None:
        return None

    async def replay(self) -> AsyncIterator[StoredJob]:
        return
        yield  # pragma: no cover - makes this an async generator
