"""SQLite specifics: WAL + synchronous settings, and gearmand's --store-queue-on-shutdown."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gearshift.store import StoredJob, open_store
from gearshift.store.sqlite import SqliteStore


def rows(path: Path, table: str = "gearman_queue") -> list[bytes]:
    with sqlite3.connect(path) as db:
        return [bytes(r[0]) for r in db.execute(f"SELECT data FROM {table} ORDER BY id")]


def pragma(store: SqliteStore, name: str) -> object:
    # Runs on the store's own thread: the connection belongs to it.
    assert store._db is not None
    return store._db.execute(f"PRAGMA {name}").fetchone()[0]


async def test_wal_and_synchronous_modes(tmp_path: Path) -> None:
    for mode, expected in (("full", 2), ("normal", 1)):
        store = open_store(f"sqlite:///{tmp_path}/{mode}.db?synchronous={mode}")
        assert isinstance(store, SqliteStore)
        await store.open()
        assert await store._call(pragma, store, "journal_mode") == "wal"
        assert await store._call(pragma, store, "synchronous") == expected
        await store.close()


async def test_store_queue_on_shutdown(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    opts = {"libsqlite3-db": str(db), "store-queue-on-shutdown": ""}
    store = open_store("libsqlite3", opts)
    await store.open()
    jobs = [StoredJob(b"f", b"", b"j%d" % i) for i in range(5)]
    for job in jobs:
        await store.add(job)
    await store.done(jobs[1])
    assert rows(db) == []  # nothing written while running, as in gearmand
    await store.close()
    assert rows(db) == [b"j0", b"j2", b"j3", b"j4"]

    # Replayed jobs are still deleted when they finish (gearmand does the same).
    store = open_store("libsqlite3", opts)
    await store.open()
    replayed = [job async for job in store.replay()]
    await store.done(replayed[0])
    assert rows(db) == [b"j2", b"j3", b"j4"]
    await store.add(StoredJob(b"f", b"", b"new"))
    assert rows(db) == [b"j2", b"j3", b"j4"]
    await store.close()
    assert rows(db) == [b"j2", b"j3", b"j4", b"new"]
