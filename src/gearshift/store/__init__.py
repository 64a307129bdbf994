"""Durable queues for background jobs: memory, SQLite, PostgreSQL, Redis, MySQL."""

from gearshift.store.base import Store, StoredJob
from gearshift.store.memory import MemoryStore

__all__ = ["MemoryStore", "Store", "StoredJob"]
