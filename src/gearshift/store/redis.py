"""The Redis store (redis.asyncio), and gearmand's ``-q redis``.

Layout under a prefix ``P`` (gearmand's default ``_gear_``):

* ``P:seq``      a counter; each job's id comes from it, so ids grow with time;
* ``P:queue``    a sorted set of ids, scored by id (replay reads it oldest first);
* ``P:job:<id>`` a hash per job: ``function``, ``unique``, ``data``, ``priority``, ``when``.

gearmand keys a job as ``P-<function>-<unique>`` (jobs with equal or empty uniques
overwrite each other; epoch jobs are refused).  Such keys left by gearmand are
replayed too, and deleted when their job is done, so a queue moves over by itself.

A group commit is one Lua script call (one round trip, atomic in Redis) that deletes
the batch's finished jobs and adds its new ones.  No single row can make it fail:
every field is stored as a binary-safe string and Redis has no triggers or
constraints, so a failure (connection, read-only replica, missing ACL permission,
out of memory) is the backend's and hits the whole batch.  (The generic isolation of
bad rows in ``GroupCommitStore`` still applies to any error not listed as the
backend's.)  Durability is Redis's own:
acknowledged means in Redis's memory; with ``appendonly yes`` and ``appendfsync
always`` it is on disk too (see docs/stores.md).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gearshift.errors import StoreError
from gearshift.records import StoredJob
from gearshift.store.base import GroupCommitStore
from gearshift.store.rows import as_bytes, as_priority, as_when

logger = logging.getLogger(__name__)

#: (function, unique, data, priority, when) as sent to the script.
RedisRow = tuple[bytes, bytes, bytes, int, int]

_COMMIT_LUA = """
local p = ARGV[1]
local ndone = tonumber(ARGV[2])
local nadd = tonumber(ARGV[3])
local i = 4
for _ = 1, ndone do
  local k = ARGV[i]
  i = i + 1
  if string.sub(k, 1, 1) == '#' then
    redis.call('DEL', string.sub(k, 2))
  else
    redis.call('DEL', p .. ':job:' .. k)
    redis.call('ZREM', p .. ':queue', k)
  end
end
if nadd == 0 then
  if ndone == 0 then
    -- An empty commit probes the backend: a write that a read-only replica or a user
    -- without write permissions refuses, and that changes nothing.
    redis.call('INCRBY', p .. ':seq', 0)
  end
  return 0
end
local last = redis.call('INCRBY', p .. ':seq', nadd)
local first = last - nadd + 1
for id = first, last do
  redis.call('HSET', p .. ':job:' .. id, 'function', ARGV[i], 'unique', ARGV[i + 1],
             'data', ARGV[i + 2], 'priority', ARGV[i + 3], 'when', ARGV[i + 4])
  redis.call('ZADD', p .. ':queue', id, id)
  i = i + 5
end
return first
"""

_UUID_TAIL = re.compile(
    rb"-([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$"
)
_REPLAY_CHUNK = 500
#: Errors that say Redis is unusable for writes now, whatever the rows.
_BACKEND_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.AuthenticationError,
    redis.exceptions.AuthorizationError,
    redis.exceptions.NoPermissionError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.MasterDownError,
)
#: The same, as error codes at the start of a reply.
_BACKEND_CODES = ("NOPERM", "READONLY", "OOM", "MISCONF", "LOADING", "BUSY", "MASTERDOWN", "NOAUTH")
#: What Redis 7.0 answers when a script calls a command its user may not run.
_SCRIPT_NOPERM = "can't run this command"


class RedisStore(GroupCommitStore[RedisRow]):
    """Background jobs in Redis.

    Args:
        url: ``redis://[:password@]host:port/db`` (also ``rediss://``, ``unix://``).
        prefix: key prefix (gearmand's default is ``_gear_``).
        connect_timeout: seconds allowed for connecting and for each command.
    """

    name = "redis"

    def __init__(self, url: str, *, prefix: str = "_gear_", connect_timeout: float = 5.0) -> None:
        super().__init__()
        self.url = url
        self.prefix = prefix
        self.connect_timeout = connect_timeout
        self._client: Any = None
        self._script: Any = None

    def describe(self) -> str:
        where = self.url.split("@")[-1].split("://")[-1]
        return f"redis:{where} prefix {self.prefix}"

    async def _connect(self) -> None:
        await self._disconnect()
        client = aioredis.Redis.from_url(
            self.url,
            socket_connect_timeout=self.connect_timeout,
            socket_timeout=self.commit_timeout,
            # A commit whose answer was lost is not retried blindly: the batch fails
            # (QUEUE_ERROR) and the recovery loop reconnects.
            retry=Retry(NoBackoff(), 0),
            single_connection_client=True,
        )
        try:
            await client.ping()
        except BaseException:
            await client.aclose()
            raise
        self._client = client
        self._script = client.register_script(_COMMIT_LUA)

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.aclose()
            except Exception as exc:
                logger.debug("redis close: %s", exc)

    def _row(self, job: StoredJob) -> RedisRow:
        return (job.function, job.unique, job.data, int(job.priority), int(job.when))

    def _backend_failed(self, exc: Exception) -> bool:
        if super()._backend_failed(exc) or isinstance(exc, _BACKEND_ERRORS):
            return True
        text = str(exc)
        return text.startswith(_BACKEND_CODES) or _SCRIPT_NOPERM in text

    async def _commit(self, rows: list[RedisRow], dones: list[object]) -> list[object]:
        if self._client is None or self._script is None:
            raise StoreError("not connected")
        args: list[Any] = [self.prefix, len(dones), len(rows)]
        args.extend(dones)
        for row in rows:
            args.extend(row)
        first = int(await self._script(keys=[], args=args))
        # Keys are the ids as ints (small: the server keeps one per queued job);
        # gearmand's keys are kept as b"#<key>".
        return list(range(first, first + len(rows)))

    async def _replay(self) -> AsyncIterator[StoredJob]:
        client = self._client
        if client is None:
            raise StoreError(f"{self.describe()}: store is not open")
        async for job in self._replay_legacy(client):
            yield job
        start = 0
        while True:
            ids = await client.zrange(f"{self.prefix}:queue", start, start + _REPLAY_CHUNK - 1)
            if not ids:
                return
            start += len(ids)
            pipe = client.pipeline(transaction=False)
            for job_id in ids:
                pipe.hgetall(f"{self.prefix}:job:{job_id.decode()}")
            for job_id, fields in zip(ids, await pipe.execute(), strict=True):
                if not fields:
                    continue
                yield StoredJob(
                    function=as_bytes(fields.get(b"function")),
                    unique=as_bytes(fields.get(b"unique")),
                    data=as_bytes(fields.get(b"data")),
                    priority=as_priority(fields.get(b"priority", b"1")),
                    when=as_when(fields.get(b"when", b"0")),
                    key=int(job_id),
                )

    async def _replay_legacy(self, client: Any) -> AsyncIterator[StoredJob]:
        """Jobs gearmand stored as ``<prefix>-<function>-<unique>`` hashes."""
        head = self.prefix.encode() + b"-"
        async for key in client.scan_iter(match=_glob_escape(head) + b"*", count=1000):
            fields = await client.hgetall(key)
            if not fields:
                continue
            rest = key[len(head) :]
            if b"function" in fields and b"unique" in fields:  # gearmand 2.0 adds them
                function, unique = fields[b"function"], fields[b"unique"]
            else:
                function, unique = _split_legacy(rest)
            yield StoredJob(
                function=function,
                unique=unique,
                data=as_bytes(fields.get(b"data")),
                priority=as_priority(fields.get(b"priority", b"1")),
                when=0,
                key=b"#" + key,
            )


def _glob_escape(value: bytes) -> bytes:
    return re.sub(rb"([*?\[\]\\])", rb"\\\1", value)


def _split_legacy(rest: bytes) -> tuple[bytes, bytes]:
    """Split gearmand's ``<function>-<unique>``, which is ambiguous when either has a dash.

    libgearman's default uniques are UUIDs, recognised whole; otherwise the last dash
    separates them (function names with dashes are more common than uniques with them).
    """
    m = _UUID_TAIL.search(rest)
    if m:
        return rest[: m.start()], m.group(1)
    function, _, unique = rest.rpartition(b"-")
    return function, unique
