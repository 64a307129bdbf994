"""GearmanServer: store replay, listeners, timers, graceful and immediate shutdown.

``start()`` opens the store, replays its background jobs into the scheduler, then opens
the listeners, starts the optional services (``service.Service``: the HTTP listener,
the cluster, plugged in by ``gearshift.build.build_server``) and returns the bound addresses
(port 0 works).  ``shutdown(graceful)``
closes the listeners and the connections and then the store; a graceful one drains
first (``_drain``): submits are refused, durable queued jobs stay in the store for the
next start, and the server waits for running and foreground jobs until
``drain_timeout``.  Signal handling is the CLI's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import ssl
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from gearshift._version import __version__
from gearshift.addresses import is_loopback
from gearshift.server.access import PeerGate
from gearshift.server.admin import AdminCommands
from gearshift.server.config import ServerConfig
from gearshift.server.connection import Connection
from gearshift.server.durable import Tables, build_tables
from gearshift.server.model import Peer
from gearshift.server.observe import JobEvents
from gearshift.server.scheduler import Scheduler
from gearshift.server.service import Service
from gearshift.server.throttle import LogThrottle
from gearshift.store import Store, StoredJob, open_store
from gearshift.tls import server_context

logger = logging.getLogger(__name__)

#: How often a graceful shutdown checks whether the last job is gone.
_DRAIN_POLL = 0.05
#: Seconds a TLS peer gets to complete its handshake.
_TLS_HANDSHAKE_TIMEOUT = 10.0


class _LoopTimers:
    """Scheduler timers on the event loop; output they cause is flushed right after."""

    __slots__ = ("loop", "server")

    def __init__(self, loop: asyncio.AbstractEventLoop, server: GearmanServer) -> None:
        self.loop = loop
        self.server = server

    def call_later(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        return self.loop.call_later(delay, self._fire, callback)

    def _fire(self, callback: Callable[[], None]) -> None:
        try:
            callback()
        finally:
            self.server.scheduler.flush()


class GearmanServer:
    """A Gearman job server on one asyncio event loop.

    Args:
        config: listen address, limits and gearmand options; defaults otherwise.
        store: the durable queue; by default built from ``config.queue_type`` and
            ``config.queue_options`` with ``gearshift.store.open_store``.
        services: optional services to run beside it (``gearshift.build.build_server`` picks
            them from the configuration).
    """

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        store: Store | None = None,
        services: Iterable[Service] = (),
    ) -> None:
        self.config = config or ServerConfig()
        self.version = __version__
        self._store = store
        self.connections: set[Connection] = set()
        self.addresses: list[tuple[str, int]] = []
        self._listeners: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopped: asyncio.Event | None = None
        self._cut_short = asyncio.Event()
        self._shutdown_task: asyncio.Task[None] | None = None
        self._idle_task: asyncio.Task[None] | None = None
        self._housekeeping_task: asyncio.Task[None] | None = None
        #: Seconds between ``Scheduler.compact`` calls.
        self.housekeeping_interval = 5.0
        self._closing = False
        #: A shutdown asked for while starting: None, or whether it is graceful.
        self._early_stop: bool | None = None
        self._fd_log = LogThrottle()
        self._limit_log = LogThrottle()
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        #: Connections beyond this leave too few descriptors to accept more.
        self.fd_pressure = soft - 32 if soft != resource.RLIM_INFINITY and soft > 64 else 1 << 30
        self.persistent = False
        #: Bytes of large-payload buffers reserved ahead of their data (connection.py).
        self.payload_reserved = 0
        # Ops hooks: TLS, job timings/debug lines.
        self.tls_context: ssl.SSLContext | None = None
        self.job_events: JobEvents | None = None
        self.services: list[Service] = list(services)
        self._started_services: list[Service] = []
        #: Every admin command; services add theirs in ``prepare``.
        self.admin = AdminCommands()
        #: Where the HTTP service listens, when there is one.
        self.http_addresses: list[tuple[str, int]] = []
        self.started_at = time.monotonic()
        self.loop: asyncio.AbstractEventLoop
        self.scheduler: Scheduler
        #: The reader's handler tables, shared by every connection.
        self.tables: Tables
        self.store: Store

    @property
    def verbose(self) -> str:
        return self.config.verbose

    # ------------------------------------------------------------------ lifecycle

    def assemble(self) -> None:
        """Build the store object, the scheduler and the reader tables on the running
        loop, opening nothing: ``start`` begins with this, and tests that drive
        ``Connection`` objects with fake transports stop there."""
        cfg = self.config
        self.loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self._cut_short = asyncio.Event()
        self.store = self._store or open_store(cfg.queue_type, cfg.queue_options)
        self.persistent = self.store.persistent
        self.scheduler = Scheduler(
            _LoopTimers(self.loop, self),
            time.time,
            handle_prefix=cfg.handle_prefix.encode(),
            job_retries=cfg.job_retries,
            worker_wakeup=cfg.worker_wakeup,
            wakeup_delay=cfg.worker_wakeup_delay,
            exceptions=cfg.exceptions,
            store_done=self.store_done if self.persistent else None,
        )
        self.tables = build_tables(self.scheduler, self.persistent)
        self.store.held_jobs = self.held_records
        self._install_ops()

    async def start(self) -> list[tuple[str, int]]:
        """Open the store, replay it, listen; return the bound (host, port) pairs.

        Raises:
            ConfigError: the store cannot be built from the configuration.
            StoreError: the store cannot be opened or replayed.
            OSError: the address cannot be bound.
        """
        cfg = self.config
        self.assemble()
        # A clustered store is named its node here, before it joins in open().
        for service in self.services:
            service.prepare(self)
        logger.info("queue store: %s", self.store.describe())
        await self.store.open()
        if self.persistent:
            replayed = 0
            async for stored in self.store.replay():
                self.scheduler.replay(stored)
                replayed += 1
            logger.info("replayed %d jobs from %s", replayed, self.store.describe())
        try:
            self._listeners = await self._listen()
        except BaseException:
            await self.store.close()
            raise
        self.addresses = []
        for listener in self._listeners:
            for sock in listener.sockets:
                addr = sock.getsockname()
                self.addresses.append((str(addr[0]), int(addr[1])))
        await self._start_services()
        if cfg.idle_timeout:
            self._idle_task = self.loop.create_task(self._reap_idle(cfg.idle_timeout))
        self._housekeeping_task = self.loop.create_task(self._housekeeping())
        logger.info(
            "listening on %s",
            ", ".join(f"{h}:{p}" for h, p in self.addresses),
        )
        if self._early_stop is not None:
            self.request_shutdown(self._early_stop)
        return list(self.addresses)

    async def _listen(self) -> list[asyncio.Server]:
        cfg = self.config
        factory: type[Connection] = Connection
        if self.tls_context is not None:
            from gearshift.server.tlsconn import TLSConnection

            factory = TLSConnection
        # "-L a,b" listens on several addresses (gearmand takes one).
        hosts = cfg.listen.split(",") if cfg.listen and "," in cfg.listen else cfg.listen
        server = await self.loop.create_server(
            lambda: factory(self),
            host=hosts or None,
            port=cfg.port,
            backlog=cfg.backlog,
            reuse_address=True,
            ssl=self.tls_context,
            # A peer that never finishes its handshake must not hold a slot for a minute.
            ssl_handshake_timeout=_TLS_HANDSHAKE_TIMEOUT if self.tls_context else None,
        )
        return [server]

    def _install_ops(self) -> None:
        """TLS context, access gate and job observer, as the configuration asks."""
        cfg = self.config
        if cfg.ssl:
            self.tls_context = server_context(
                cfg.ssl_certificate or "/etc/ssl/certs/gearmand.pem",
                cfg.ssl_key or "/etc/ssl/certs/gearmand.key",
                cfg.ssl_ca_file,
            )
        if cfg.access.has_function_rules:
            self.scheduler.gate = PeerGate(cfg.access)
        if cfg.http or logging.getLogger("gearshift").isEnabledFor(logging.DEBUG):
            self.job_events = JobEvents()
            self.scheduler.observer = self.job_events

    async def _start_services(self) -> None:
        """Start each service; if one cannot start, undo the start and raise."""
        try:
            for service in self.services:
                await service.start(self)
                self._started_services.append(service)
        except BaseException:
            started, self._started_services = self._started_services, []
            for service in reversed(started):
                with contextlib.suppress(Exception):
                    await service.stop()
                    await service.close()
            for listener in self._listeners:
                listener.close()
            await self.store.close()
            raise

    async def serve_forever(self) -> None:
        """Wait until the server has shut down (by ``shutdown``, admin or a signal)."""
        assert self._stopped is not None, "call start() first"
        await self._stopped.wait()
        if self._shutdown_task is not None:
            await asyncio.shield(self._shutdown_task)

    def request_shutdown(self, graceful: bool) -> None:
        """Start a shutdown from synchronous code (admin command, signal handler).

        Called before ``start()`` has finished (a signal during a long replay), the
        shutdown begins as soon as the server is up.
        """
        if self._stopped is None or not self._listeners:
            self._early_stop = (
                graceful if self._early_stop is None else self._early_stop and graceful
            )
            return
        if self._shutdown_task is None:
            self._shutdown_task = self.loop.create_task(self.shutdown(graceful))
        elif not graceful:
            # An immediate stop cuts a graceful drain short.
            self._closing = True
            self._cut_short.set()

    async def shutdown(self, graceful: bool = False) -> None:
        """Stop: if ``graceful``, drain first (``_drain``); close listeners, connections
        and the store."""
        if graceful:
            await self._drain()
        for listener in self._listeners:
            listener.close()
        services, self._started_services = self._started_services, []
        for service in reversed(services):
            await service.stop()
        self._closing = True
        self._close_all()
        for listener in self._listeners:
            await listener.wait_closed()
        self._listeners = []
        for task in (self._idle_task, self._housekeeping_task):
            if task is not None:
                task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)
        for service in reversed(services):
            # The cluster ends its lease here: the other members take over what is
            # left at once.
            await service.close()
        try:
            await self.store.close()
        except Exception:
            logger.exception("closing the store failed")
        if self._stopped is not None:
            self._stopped.set()

    async def _drain(self) -> None:
        """Wind down before a graceful stop, bounded by ``config.drain_timeout``.

        The listeners stay open, so workers can still connect (or reconnect) and
        finish what runs; every submit is refused with ERROR SHUTDOWN_GRACEFUL.  Durable
        queued jobs are not handed out any more: they stay in the store for the next
        start.  The drain ends when no job is left here (running, foreground, or not in
        a durable store), at the deadline, or when an immediate shutdown cuts it short;
        a summary of what was left behind is logged.
        """
        sched = self.scheduler
        loop = self.loop
        started = loop.time()
        timeout = self.config.drain_timeout
        sched.drain()
        sched.flush()
        logger.warning(
            "draining for shutdown%s: submits refused, %d queued durable jobs left in the"
            " store, waiting for %d jobs",
            f" (at most {timeout:g}s)" if timeout > 0 else "",
            sched.left_in_store,
            sched.wanted_count(),
        )
        deadline = started + timeout if timeout > 0 else None
        while sched.wanted_count() and not self._closing:
            wait = _DRAIN_POLL
            if deadline is not None:
                wait = min(wait, deadline - loop.time())
                if wait <= 0:
                    break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._cut_short.wait(), wait)
        self._log_drain_result(loop.time() - started)

    def _log_drain_result(self, elapsed: float) -> None:
        """Say what the drain leaves behind: durable jobs stay, the others are lost."""
        sched = self.scheduler
        running = durable = 0
        for job in sched.handles.values():
            if job.ignore:
                continue
            if job.worker is not None:
                running += 1
            if job.stored is not None or job.pending:
                durable += 1
        left = sched.wanted_count()
        if not left:
            logger.warning(
                "drained in %.1fs; %d durable jobs stay in the store for the next start",
                elapsed,
                sched.left_in_store,
            )
            return
        logger.warning(
            "drain stopped after %.1fs with %d jobs left (%d running): %d are in the store"
            " and run after the next start, %d are lost (not durable); %d queued durable"
            " jobs also stay in the store",
            elapsed,
            left,
            running,
            durable,
            left - durable,
            sched.left_in_store,
        )

    def _close_all(self) -> None:
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()

    async def __aenter__(self) -> GearmanServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._shutdown_task is not None:
            await asyncio.shield(self._shutdown_task)
        elif not self._closing:
            await self.shutdown(False)

    # ------------------------------------------------------------------ helpers

    def warn_connection_limit(self) -> None:
        """Log (at most every 10 s) that connections are refused by --max-connections."""
        if self._limit_log.ready() is not None:
            logger.error(
                "connection limit %d reached: refusing new connections",
                self.config.max_connections,
            )

    def warn_fd_pressure(self) -> None:
        """Log (at most every 10 s) that accept() is about to fail with EMFILE.

        asyncio logs and retries accept errors itself; uvloop (libuv) silently sheds
        the excess connections, so this is the operator's only hint there.
        """
        if self._fd_log.ready() is not None:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            logger.error(
                "%d connections: near the file descriptor limit %d; new connections "
                "may be refused until some close (raise it with -f/--file-descriptors)",
                len(self.connections),
                soft,
            )

    def track(self, task: asyncio.Task[Any]) -> None:
        """Keep a reference to a background task until it ends."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.track(self.loop.create_task(coro))

    def store_done(self, stored: StoredJob) -> None:
        self.spawn(self._done(stored))

    def held_records(self) -> list[StoredJob]:
        """The store records of every job held here (queued, delayed or running).

        A store whose backend came back without what it had committed (a SQLite file
        deleted or replaced) writes these again, and updates their keys, before it
        takes new jobs: they were acknowledged, so a restart must not lose them.
        """
        return [job.stored for job in self.scheduler.handles.values() if job.stored is not None]

    async def _done(self, stored: StoredJob) -> None:
        try:
            await self.store.done(stored)
        except Exception:
            logger.exception("store done failed for %r/%r", stored.function, stored.unique)

    async def _housekeeping(self) -> None:
        """Every ``housekeeping_interval`` seconds: give back what a burst of jobs grew."""
        while True:
            await asyncio.sleep(self.housekeeping_interval)
            forgotten = self.scheduler.forget_idle()
            if forgotten:
                logger.info("forgot %d idle functions", forgotten)
            freed = self.scheduler.compact()
            if freed:
                logger.info("compacted job tables: %d KiB given back", freed // 1024)

    async def _reap_idle(self, idle: float) -> None:
        while True:
            await asyncio.sleep(max(idle / 4, 0.05))
            limit = self.loop.time() - idle
            for conn in list(self.connections):
                # Only silent peers with no role: a sleeping worker is quiet by design.
                if (
                    conn.last_active < limit
                    and not conn.abilities
                    and not conn.jobs
                    and not conn.listening
                ):
                    conn.close(f"idle for more than {idle:g}s")

    # ------------------------------------------------------------------ admin host

    def getpid(self) -> int:
        return os.getpid()

    def may_shutdown(self, peer: Peer) -> bool:
        policy = self.config.access
        if policy.enabled:
            return policy.may_admin(peer.host, peer.identity)
        return is_loopback(peer.host)

    def may_change(self, peer: Peer) -> bool:
        """May ``peer`` run state-changing admin commands (the access rules)?"""
        return self.config.access.may_admin(peer.host, peer.identity)
