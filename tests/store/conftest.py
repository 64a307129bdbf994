"""Fixtures for store tests: every backend, each test on its own table or key prefix."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from gearshift.store import Store, open_store

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
MYSQL_URL = "mysql://root@127.0.0.1:3306/test"
REDIS_URL = "redis://127.0.0.1:6379/0"

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("mysql", id="mysql", marks=pytest.mark.mysql),
]
NETWORK_BACKENDS = BACKENDS[1:]


@dataclass
class Backend:
    """One store location: a URL, and how to reach the same data through another port."""

    kind: str
    name: str
    url: str
    path: Path | None = None
    opened: list[Store] = field(default_factory=list)

    @property
    def port(self) -> int:
        return {"postgres": 5432, "redis": 6379, "mysql": 3306}[self.kind]

    def url_via(self, port: int) -> str:
        """The same store reached through 127.0.0.1:``port`` (a proxy)."""
        parts = urlsplit(self.url)
        netloc = parts.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{port}"
        new = f"{netloc[0]}@{host}" if len(netloc) == 2 else host
        return urlunsplit((parts.scheme, new, parts.path, parts.query, ""))

    async def open(self, url: str | None = None, **attrs: object) -> Store:
        store = open_store(url or self.url)
        for k, v in attrs.items():
            setattr(store, k, v)
        await store.open()
        self.opened.append(store)
        return store

    async def drop(self) -> None:
        if self.kind == "postgres":
            import asyncpg

            conn = await asyncpg.connect(PG_URL)
            try:
                await conn.execute(f"DROP TABLE IF EXISTS {self.name}")
            finally:
                await conn.close()
        elif self.kind == "mysql":
            import asyncmy

            conn = await asyncmy.connect(host="127.0.0.1", port=3306, user="root", database="test")
            try:
                async with conn.cursor() as cur:
                    await cur.execute(f"DROP TABLE IF EXISTS {self.name}")
            finally:
                conn.close()
        elif self.kind == "redis":
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(REDIS_URL)
            try:
                keys = [k async for k in client.scan_iter(match=f"{self.name}*")]
                if keys:
                    await client.delete(*keys)
            finally:
                await client.aclose()


def make_backend(kind: str, tmp_path: Path) -> Backend:
    name = f"gs_{uuid.uuid4().hex[:12]}"
    if kind == "sqlite":
        path = tmp_path / f"{name}.db"
        return Backend(kind, name, f"sqlite:///{path}?table={name}", path=path)
    if kind == "postgres":
        return Backend(kind, name, f"{PG_URL}?table={name}")
    if kind == "mysql":
        return Backend(kind, name, f"{MYSQL_URL}?table={name}")
    return Backend(kind, name, f"{REDIS_URL}?prefix={name}")


async def _backend_fixture(kind: str, tmp_path: Path) -> AsyncIterator[Backend]:
    backend = make_backend(kind, tmp_path)
    try:
        yield backend
    finally:
        for store in backend.opened:
            await store.close()
        await backend.drop()


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """A fresh, empty location for each store type; dropped afterwards."""
    async for b in _backend_fixture(request.param, tmp_path):
        yield b


@pytest.fixture(params=NETWORK_BACKENDS)
async def network_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Like ``backend``, for the stores that talk TCP to a database server."""
    async for b in _backend_fixture(request.param, tmp_path):
        yield b


OpenStore = Callable[..., Awaitable[Store]]
