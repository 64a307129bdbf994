"""open_store: URLs and gearmand's -q flags name the right store; bad ones are ConfigErrors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gearshift.errors import ConfigError
from gearshift.store import DEFAULT_SQLITE_PATH, MemoryStore, open_store
from gearshift.store.mysql import MysqlStore
from gearshift.store.postgres import PostgresStore, parse_conninfo
from gearshift.store.redis import RedisStore, _split_legacy
from gearshift.store.sqlite import SqliteStore


def test_default_is_sqlite_in_the_working_directory() -> None:
    store = open_store(None)
    assert isinstance(store, SqliteStore)
    assert store.path == Path(DEFAULT_SQLITE_PATH) == Path("gearshift.db")
    assert store.synchronous == "full"
    assert store.persistent


@pytest.mark.parametrize("name", ["builtin", "BUILTIN", "memory", "memory://"])
def test_memory(name: str) -> None:
    store = open_store(name)
    assert isinstance(store, MemoryStore)
    assert not store.persistent


def test_sqlite_urls() -> None:
    store = open_store("sqlite:///rel/q.db?synchronous=normal&table=jobs&busy_timeout=1.5")
    assert isinstance(store, SqliteStore)
    assert (store.path, store.table, store.synchronous) == (Path("rel/q.db"), "jobs", "normal")
    assert store.busy_timeout == 1.5
    store = open_store("sqlite:////var/lib/q.db")
    assert isinstance(store, SqliteStore)
    assert store.path == Path("/var/lib/q.db")
    assert "synchronous=full" in store.describe()


def test_gearmand_libsqlite3_flags() -> None:
    opts = {"libsqlite3-db": "/tmp/g.db", "libsqlite3-table": "q2", "store-queue-on-shutdown": ""}
    store = open_store("LibSqlite3", opts)
    assert isinstance(store, SqliteStore)
    assert (store.path, store.table, store.store_on_shutdown) == (Path("/tmp/g.db"), "q2", True)
    store = open_store("libsqlite3", {"libsqlite3-db": "/tmp/g.db"})
    assert isinstance(store, SqliteStore)
    assert (store.table, store.store_on_shutdown) == ("gearman_queue", False)
    with pytest.raises(ConfigError, match="--libsqlite3-db"):
        open_store("libsqlite3", {})


def test_postgres_url_and_flags() -> None:
    store = open_store("postgresql://u:secret@db.example:5433/gq?table=jobs&sslmode=disable")
    assert isinstance(store, PostgresStore)
    assert store.table == "jobs"
    assert store.dsn == "postgresql://u:secret@db.example:5433/gq?sslmode=disable"
    assert "secret" not in store.describe()
    store = open_store(
        "Postgres", {"libpq-conninfo": "host=127.0.0.1 port=5432 dbname=test user='a b'"}
    )
    assert isinstance(store, PostgresStore)
    assert store.table == "queue"
    assert store.connect_kwargs == {
        "host": "127.0.0.1",
        "port": 5432,
        "database": "test",
        "user": "a b",
    }


def test_conninfo_spaces_around_equals() -> None:
    assert parse_conninfo("host = h  dbname= d password=p\\'q") == {
        "host": "h",
        "database": "d",
        "password": "p'q",
    }


def test_redis_url_and_flags() -> None:
    store = open_store("redis://:pw@127.0.0.1:6380/2?prefix=jobs_")
    assert isinstance(store, RedisStore)
    assert (store.url, store.prefix) == ("redis://:pw@127.0.0.1:6380/2", "jobs_")
    assert "pw" not in store.describe()
    store = open_store("redis", {"redis-server": "10.0.0.5", "redis-port": "6390"})
    assert isinstance(store, RedisStore)
    assert (store.url, store.prefix) == ("redis://10.0.0.5:6390/0", "_gear_")
    store = open_store("redis", {"redis-password": "p@ss/w", "redis-prefix": "x"})
    assert isinstance(store, RedisStore)
    assert store.url == "redis://:p%40ss%2Fw@127.0.0.1:6379/0"
    with pytest.raises(ConfigError, match="--redis-port"):
        open_store("redis", {"redis-port": "many"})


def test_mysql_url_and_flags() -> None:
    store = open_store("mysql://bob:s%40cret@127.0.0.1:3307/gq?table=jobs")
    assert isinstance(store, MysqlStore)
    assert (store.host, store.port, store.user, store.password, store.database, store.table) == (
        "127.0.0.1",
        3307,
        "bob",
        "s@cret",
        "gq",
        "jobs",
    )
    store = open_store("MySQL", {"mysql-user": "root", "mysql-db": "test", "mysql-table": "q"})
    assert isinstance(store, MysqlStore)
    assert (store.host, store.port, store.user, store.database, store.table) == (
        "localhost",
        3306,
        "root",
        "test",
        "q",
    )


@pytest.mark.parametrize(
    ("queue", "match"),
    [
        ("nonsense", "unknown queue type"),
        ("libmemcached", "libmemcached is not supported"),
        ("sqlite:///q.db?table=x;drop", "invalid table"),
        ("sqlite:///q.db?synchronous=sometimes", "synchronous"),
        ("sqlite:///q.db?colour=red", "unknown option"),
        ("sqlite://host/q.db", "sqlite:///"),
        ("postgresql://h/db?table=a-b", "invalid table"),
    ],
)
def test_bad_queue_settings(queue: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        open_store(queue)


@pytest.mark.parametrize(
    ("queue", "driver", "extra"),
    [
        ("postgresql://h/db", "asyncpg", "postgres"),
        ("redis://h", "redis", "redis"),
        ("mysql://h/db", "asyncmy", "mysql"),
    ],
)
def test_missing_driver_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, queue: str, driver: str, extra: str
) -> None:
    for mod in list(sys.modules):
        if mod == driver or mod.startswith(driver + ".") or mod.startswith("gearshift.store."):
            if mod not in ("gearshift.store.base", "gearshift.store.memory"):
                monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, driver, None)
    with pytest.raises(ConfigError) as err:
        open_store(queue)
    assert f"pip install 'gearshift[{extra}]'" in str(err.value)
    assert "\n" not in str(err.value)


def test_gearmand_redis_keys_split() -> None:
    uuid = b"08655ece-ec99-11f1-8be5-02fc00000001"
    assert _split_legacy(b"my-func-" + uuid) == (b"my-func", uuid)
    assert _split_legacy(b"resize-u1") == (b"resize", b"u1")
    assert _split_legacy(b"f-") == (b"f", b"")
