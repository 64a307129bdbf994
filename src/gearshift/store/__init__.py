"""Durable queues for background jobs: memory, SQLite, PostgreSQL, Redis, MySQL.

``open_store`` turns gearmand's ``-q TYPE`` plus its queue flags, or a URL, into a
``Store``.  The drivers for PostgreSQL, Redis and MySQL are optional extras and are
imported only when such a store is asked for.  It neither connects nor touches a file,
so the server calls it once while checking its command line: a setting that cannot
work (a cluster on a store that cannot be shared, a queue type gearshift does not
have) stops the server before it starts, with one line saying why.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import SplitResult, parse_qs, quote, unquote, urlsplit, urlunsplit

from gearshift.errors import ConfigError
from gearshift.records import ClusterSettings, StoredJob
from gearshift.store.base import (
    CommitStats,
    GroupCommitStore,
    Store,
)
from gearshift.store.memory import MemoryStore

__all__ = [
    "CLUSTER_FLAGS",
    "DEFAULT_SQLITE_PATH",
    "STORE_FLAGS",
    "UNSUPPORTED_STORE_FLAGS",
    "ClusterSettings",
    "CommitStats",
    "GroupCommitStore",
    "MemoryStore",
    "Store",
    "StoredJob",
    "open_store",
]

#: Where ``gearshift server`` keeps its queue when no ``--queue`` is given.
DEFAULT_SQLITE_PATH = "gearshift.db"

# module, driver module, pip extra
_DRIVERS = {
    "postgres": ("gearshift.store.postgres", "asyncpg", "postgres"),
    "redis": ("gearshift.store.redis", "redis", "redis"),
    "mysql": ("gearshift.store.mysql", "asyncmy", "mysql"),
}

_FALSE = ("0", "false", "no", "off")

#: gearmand queue plugins gearshift does not have, and the flags that belong to them.
_UNSUPPORTED: Final = {
    "libmemcached": ("libmemcached-servers", "libmemcached-prefix"),
    "libtokyocabinet": ("libtokyocabinet-file", "libtokyocabinet-optimize"),
}
#: Their flags: accepted by the command line only to be refused with a clear line.
UNSUPPORTED_STORE_FLAGS: Final = tuple(f for flags in _UNSUPPORTED.values() for f in flags)
#: gearmand's queue flags, by the ``-q`` type that takes them.  gearmand ignores the
#: flags of a queue that is not selected, which hides a mistyped ``-q``: gearshift
#: refuses them.
STORE_FLAGS: Final = {
    "libsqlite3": ("libsqlite3-db", "libsqlite3-table"),
    "Postgres": ("libpq-conninfo", "libpq-table"),
    "MySQL": (
        "mysql-host",
        "mysql-port",
        "mysql-user",
        "mysql-password",
        "mysql-db",
        "mysql-table",
    ),
    "redis": ("redis-server", "redis-port", "redis-password", "redis-prefix"),
}
_QUEUE_NAMES = {
    "libsqlite3": "libsqlite3",
    "sqlite": "libsqlite3",
    "sqlite3": "libsqlite3",
    "postgres": "Postgres",
    "postgresql": "Postgres",
    "libpq": "Postgres",
    "mysql": "MySQL",
    "redis": "redis",
}
#: Cluster settings, as flags (``--cluster-name``) and as URL parameters (``?cluster=``).
CLUSTER_FLAGS: Final = ("cluster-name", "cluster-lease", "cluster-heartbeat", "cluster-node")
_CLUSTER_PARAMS = ("cluster", "lease", "heartbeat", "node")


def _module(kind: str) -> Any:
    modname, driver, extra = _DRIVERS[kind]
    try:
        return importlib.import_module(modname)
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] == driver:
            raise ConfigError(
                f"the {kind} queue needs the {driver} driver: pip install 'gearshift[{extra}]'"
            ) from None
        raise


def _flag(options: Mapping[str, str], name: str) -> bool:
    if name not in options:
        return False
    return str(options[name]).strip().lower() not in _FALSE


def _query(parts: Any) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}


def _float(value: str, what: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{what} must be a number, not {value!r}") from None


def _int(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{what} must be an integer, not {value!r}") from None


def _no_unknown(query: Mapping[str, str], known: set[str], url: str) -> None:
    unknown = set(query) - known
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(sorted(unknown))} in queue URL {url!r}")


def _refuse_unsupported(lower: str, options: Mapping[str, str]) -> None:
    """ConfigError for gearmand's memcached and Tokyo Cabinet queues and their flags."""
    for plugin, flags in _UNSUPPORTED.items():
        if lower == plugin:
            raise ConfigError(
                f"-q {plugin} is not supported: gearshift has no such queue"
                " (use libsqlite3, Postgres, MySQL, redis or builtin)"
            )
        for flag in flags:
            if flag in options:
                raise ConfigError(
                    f"--{flag} is not supported: gearshift has no {plugin} queue"
                    " (use libsqlite3, Postgres, MySQL, redis or builtin)"
                )


def _refuse_foreign_flags(queue: str | None, options: Mapping[str, str]) -> None:
    """ConfigError for the flags of a queue other than the one chosen."""
    lower = (queue or "").strip().lower()
    chosen = _QUEUE_NAMES.get(lower)
    for owner, flags in STORE_FLAGS.items():
        if owner == chosen:
            continue
        for flag in flags:
            if flag not in options:
                continue
            if queue is None:
                where = "the default queue (SQLite in ./" + DEFAULT_SQLITE_PATH + ")"
            elif "://" in lower or lower.startswith("unix:"):
                where = "a --queue URL (its settings go in the URL)"
            else:
                where = f"-q {queue.strip()}"
            raise ConfigError(f"--{flag} is a setting of -q {owner}; it does not apply to {where}")


def _refuse_cluster(kind: str, options: Mapping[str, str], query: Mapping[str, str]) -> None:
    """ConfigError when a store other than PostgreSQL is given cluster settings.

    Ignoring them would be worse than refusing: two servers on one Redis prefix or one
    SQLite file would both replay, and run, every job.
    """
    given = [f"--{flag}" for flag in CLUSTER_FLAGS if flag in options]
    given += [f"?{param}=" for param in _CLUSTER_PARAMS if param in query]
    if given:
        raise ConfigError(
            f"{given[0]} needs a PostgreSQL queue (--queue postgresql://...);"
            f" the {kind} queue cannot be shared as a cluster"
        )


def _unshared_url(
    kind: str, url: str, options: Mapping[str, str]
) -> tuple[SplitResult, dict[str, str]]:
    """The parts and the query of the URL of a store that cannot be shared as a cluster.

    Raises:
        ConfigError: the URL or the flags carry cluster settings.
    """
    parts = urlsplit(url)
    q = _query(parts)
    _refuse_cluster(kind, options, q)
    return parts, q


def _sqlite_from_url(url: str, options: Mapping[str, str]) -> Store:
    from gearshift.store.sqlite import SqliteStore

    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(f"sqlite URL {url!r}: use sqlite:///relative.db or sqlite:////abs.db")
    path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    if not path:
        raise ConfigError(f"sqlite URL {url!r} names no file")
    q = _query(parts)
    _refuse_cluster("sqlite", options, q)
    _no_unknown(q, {"table", "synchronous", "busy_timeout", "store_on_shutdown"}, url)
    return SqliteStore(
        path,
        table=q.get("table", "gearman_queue"),
        synchronous=q.get("synchronous", "full"),
        busy_timeout=_float(q.get("busy_timeout", "5"), "busy_timeout"),
        store_on_shutdown=q.get("store_on_shutdown", "0").lower() not in _FALSE
        or _flag(options, "store-queue-on-shutdown"),
    )


def _cluster(q: dict[str, str], options: Mapping[str, str]) -> ClusterSettings | None:
    """Cluster settings from a URL query or the ``--cluster-*`` flags (which win).

    The URL form is ``?cluster=NAME&lease=S&heartbeat=S&node=X``.  None when no
    cluster name is given.
    """
    values: dict[str, str] = {
        k: q.pop(k) for k in ("cluster", "lease", "heartbeat", "node") if k in q
    }
    for key in ("name", "lease", "heartbeat", "node"):
        flag = options.get(f"cluster-{key}")
        if flag is not None:
            values["cluster" if key == "name" else key] = flag
    name = values.get("cluster", "")
    if not name:
        if len(values) > ("cluster" in values):
            raise ConfigError("cluster lease/heartbeat/node need a cluster name (--cluster-name)")
        return None
    lease = _float(values.get("lease", "10"), "cluster lease")
    heartbeat = _float(values.get("heartbeat", str(min(2.0, lease / 3))), "cluster heartbeat")
    if not 0 < heartbeat < lease:
        raise ConfigError(
            f"cluster heartbeat ({heartbeat:g}s) must be positive and shorter than the"
            f" lease ({lease:g}s)"
        )
    return ClusterSettings(name=name, node=values.get("node", ""), lease=lease, heartbeat=heartbeat)


def _postgres_from_url(url: str, options: Mapping[str, str]) -> Store:
    mod = _module("postgres")
    parts = urlsplit(url)
    q = _query(parts)
    table = q.pop("table", "queue")
    cluster = _cluster(q, options)
    # Every other query parameter is asyncpg's (sslmode, ...); keep them in the DSN.
    query = "&".join(f"{k}={v}" for k, v in q.items())
    dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
    store: Store = mod.PostgresStore(dsn, table=table, cluster=cluster)
    return store


def _redis_from_url(url: str, options: Mapping[str, str]) -> Store:
    parts, q = _unshared_url("redis", url, options)
    mod = _module("redis")
    prefix = q.pop("prefix", "_gear_")
    query = "&".join(f"{k}={v}" for k, v in q.items())
    store: Store = mod.RedisStore(
        urlunsplit((parts.scheme, parts.netloc, parts.path, query, "")), prefix=prefix
    )
    return store


def _mysql_from_url(url: str, options: Mapping[str, str]) -> Store:
    parts, q = _unshared_url("mysql", url, options)
    mod = _module("mysql")
    _no_unknown(q, {"table", "connect_timeout"}, url)
    store: Store = mod.MysqlStore(
        host=parts.hostname or "localhost",
        port=parts.port or 3306,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else "",
        database=unquote(parts.path.lstrip("/")) or None,
        table=q.get("table", "gearman_queue"),
        connect_timeout=_float(q.get("connect_timeout", "5"), "connect_timeout"),
    )
    return store


def open_store(queue: str | None = None, options: Mapping[str, str] | None = None) -> Store:
    """Build the store named by a URL or a gearmand ``-q`` type.

    Args:
        queue: ``None`` for the project default (SQLite in ``./gearshift.db``), a URL
            (``sqlite:///path.db?synchronous=normal``, ``postgresql://...?table=T``,
            ``redis://...?prefix=P``, ``mysql://user:pw@host/db?table=T``,
            ``memory://``) or a gearmand queue type (``builtin``, ``libsqlite3``,
            ``Postgres``, ``redis``, ``MySQL``; case-insensitive).
        options: gearmand's queue flags without dashes, e.g.
            ``{"libsqlite3-db": "/var/lib/gearman/q.db"}``.

    Returns:
        The store, not yet opened (call ``await store.open()``).

    Raises:
        ConfigError: unknown or unsupported queue type, a bad option, cluster settings
            for a store other than PostgreSQL, or the driver is not installed.
    """
    opts: Mapping[str, str] = options or {}
    _refuse_unsupported((queue or "").strip().lower(), opts)
    _refuse_foreign_flags(queue, opts)
    if queue is None:
        from gearshift.store.sqlite import SqliteStore

        _refuse_cluster("sqlite", opts, {})
        return SqliteStore(
            DEFAULT_SQLITE_PATH, store_on_shutdown=_flag(opts, "store-queue-on-shutdown")
        )
    name = queue.strip()
    lower = name.lower()
    if lower in ("builtin", "memory", "none") or lower.startswith("memory:"):
        _refuse_cluster("memory", opts, _query(urlsplit(name)) if "://" in name else {})
        return MemoryStore()
    if lower.startswith("sqlite:"):
        return _sqlite_from_url(name, opts)
    if lower.startswith(("postgresql:", "postgres:")):
        return _postgres_from_url(name, opts)
    if lower.startswith(("redis:", "rediss:", "unix:")):
        return _redis_from_url(name, opts)
    if lower.startswith(("mysql:", "mariadb:")):
        return _mysql_from_url(name, opts)
    if lower in ("libsqlite3", "sqlite", "sqlite3"):
        from gearshift.store.sqlite import SqliteStore

        _refuse_cluster("sqlite", opts, {})
        db = opts.get("libsqlite3-db")
        if not db:
            raise ConfigError("-q libsqlite3 needs --libsqlite3-db FILE")
        return SqliteStore(
            db,
            table=opts.get("libsqlite3-table") or "gearman_queue",
            store_on_shutdown=_flag(opts, "store-queue-on-shutdown"),
        )
    if lower in ("postgres", "postgresql", "libpq"):
        mod = _module("postgres")
        store: Store = mod.PostgresStore(
            None,
            connect_kwargs=mod.parse_conninfo(opts.get("libpq-conninfo", "")),
            table=opts.get("libpq-table") or "queue",
            cluster=_cluster({}, opts),
        )
        return store
    if lower == "redis":
        _refuse_cluster("redis", opts, {})
        mod = _module("redis")
        host = opts.get("redis-server") or "127.0.0.1"
        port = _int(opts.get("redis-port") or "6379", "--redis-port")
        password = opts.get("redis-password") or ""
        auth = f":{quote(password, safe='')}@" if password else ""
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        store = mod.RedisStore(
            f"redis://{auth}{host}:{port}/0", prefix=opts.get("redis-prefix") or "_gear_"
        )
        return store
    if lower == "mysql":
        _refuse_cluster("mysql", opts, {})
        mod = _module("mysql")
        store = mod.MysqlStore(
            host=opts.get("mysql-host") or "localhost",
            port=_int(opts.get("mysql-port") or "3306", "--mysql-port"),
            user=opts.get("mysql-user") or None,
            password=opts.get("mysql-password") or "",
            database=opts.get("mysql-db") or None,
            table=opts.get("mysql-table") or "gearman_queue",
        )
        return store
    raise ConfigError(
        f"unknown queue type {queue!r} (builtin, libsqlite3, Postgres, redis, MySQL, or a URL)"
    )
