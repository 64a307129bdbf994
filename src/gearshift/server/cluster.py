"""Several gearshift servers sharing one PostgreSQL store, with takeover.

How it works (the SQL and its locking are in ``gearshift.store.postgres``):

- Plugging in: ``ClusterService`` is one of the server's optional services
  (``server.service``); it adds the store's admin commands to every server, and runs a
  ``ClusterNode`` when the store is clustered.
- Start-up: the store joins the cluster when it opens (a lease row, a new epoch), then
  the server replays the jobs this node still holds.  ``ClusterService.prepare`` names
  the node (``host:port`` unless ``--cluster-node`` says otherwise) before that happens.
- Heartbeat: every ``heartbeat`` seconds the lease is renewed.  The renewal only
  succeeds while the lease is still valid, so a server that was paused or cut off
  for longer than its lease learns that it lost it.
- Self-fencing: the lease runs, as far as this server knows, until the time it sent
  its last successful renewal plus the lease length (the database's deadline is no
  earlier).  When that moment passes without a renewal, a timer withdraws every
  queued background job from the scheduler and the store refuses adds, because
  another member may now take those jobs over.  The server then rejoins with a new
  epoch as soon as the database answers, and queues again the jobs still marked as
  its own.
- Takeover: each tick looks for members whose lease has run out and that still hold
  jobs, and claims them in chunks (``FOR UPDATE SKIP LOCKED``: one claimant per job);
  the claimed jobs are queued here through ``Scheduler.replay`` with their priority,
  unique and epoch time.  A member that shuts down cleanly ends its lease and sends
  a notification, so the others take over at once; otherwise they wake when the
  lease expires (the tick sleeps until the next expiry, never longer than a
  heartbeat).
- Admin: ``cluster`` lists the members, ``show store`` names the store in use and
  ``show stored jobs [N]`` lists what the store holds; these read the database, so
  they are answered asynchronously (the admin table takes a coroutine for a reply).

Delivery is at-least-once: a job that was running on a server that died is run again
by the server that takes it over.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from typing import TYPE_CHECKING, Any, cast

from gearshift.protocol import admin as text
from gearshift.records import StoredJob
from gearshift.server.admin import AdminHost, Reply
from gearshift.server.model import Peer

if TYPE_CHECKING:
    from gearshift.server.server import GearmanServer
    from gearshift.store.postgres import Member, PostgresStore

logger = logging.getLogger(__name__)

#: Default and largest row counts for ``show stored jobs``.
STORED_JOBS_DEFAULT = 1000
STORED_JOBS_MAX = 100_000
#: Jobs re-read per query when rejoining after a lost lease.
_ADOPT_CHUNK = 2000


class ClusterService:
    """The server's store and cluster service: admin commands about the store on every
    server, and the lease, fencing and takeover when the store is clustered."""

    def __init__(self) -> None:
        self.server: GearmanServer | None = None
        #: The cluster runner, once started (None: the store is not clustered).
        self.node: ClusterNode | None = None

    def prepare(self, server: GearmanServer) -> None:
        """Before the store opens: add the admin commands, name this node."""
        self.server = server
        server.admin.add("cluster", self._cluster_command)
        server.admin.add("show store", _show_store)
        server.admin.add("show stored jobs", _show_stored_jobs)
        store = server.store
        cluster = store.cluster
        if cluster is not None and not cluster.node:
            host = socket.gethostname() or "localhost"
            port = server.config.port
            node = f"{host}:{port}" if port else f"{host}:pid{server.getpid()}"
            store.cluster = dataclasses.replace(cluster, node=node)

    async def start(self, server: GearmanServer) -> None:
        """After the replay: run the lease and the takeover, if the store is clustered."""
        if server.store.cluster is None:
            return
        self.node = ClusterNode(server, server.store)  # type: ignore[arg-type]
        await self.node.start()

    async def stop(self) -> None:
        """Nothing: the lease is held until the server's last job is settled."""

    async def close(self) -> None:
        """End the lease, so the others take over what is left at once."""
        if self.node is not None:
            await self.node.close()

    def _cluster_command(self, host: AdminHost, peer: Peer, tokens: list[bytes]) -> Reply | None:
        if len(tokens) != 1:
            return None
        return _cluster_reply(self.node)


def node_of(server: GearmanServer) -> ClusterNode | None:
    """The cluster runner of ``server``, if its store is clustered."""
    for service in server.services:
        if isinstance(service, ClusterService):
            return service.node
    return None


class ClusterNode:
    """Runs the lease, the self-fencing and the takeover for one server.

    Args:
        server: the server whose scheduler receives jobs taken over.
        store: its clustered PostgreSQL store.
    """

    def __init__(self, server: GearmanServer, store: PostgresStore) -> None:
        assert store.cluster is not None
        self.server = server
        self.store = store
        self.settings = store.cluster
        self.loop = asyncio.get_running_loop()
        #: loop.time() by which the lease must be renewed (set before the store joins).
        self.deadline = self.loop.time() + self.settings.lease
        self.fenced = False
        #: Jobs taken over from other members, and jobs withdrawn on a lost lease.
        self.claimed = 0
        self.withdrawn = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._fence_timer: asyncio.TimerHandle | None = None
        self._closing = False

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def node(self) -> str:
        return self.store.cluster.node if self.store.cluster else ""

    async def start(self) -> None:
        """After the replay: listen for the others' notifications, start the ticks."""
        self._arm_fence()
        try:
            await self.store.listen(self._notified)
            await self.store.set_address(self._address())
        except Exception as exc:
            logger.warning("cluster %s: LISTEN failed (%s); polling only", self.name, exc)
        self._task = self.loop.create_task(self._run())
        logger.info(
            "cluster %s: node %s, lease %gs, heartbeat %gs",
            self.name,
            self.node,
            self.settings.lease,
            self.settings.heartbeat,
        )

    async def close(self) -> None:
        """Stop ticking and end the lease, so the others take over what is left."""
        self._closing = True
        if self._fence_timer is not None:
            self._fence_timer.cancel()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self.store.leave()
        except Exception as exc:
            logger.warning("cluster %s: could not end the lease: %s", self.name, exc)

    # ------------------------------------------------------------------ ticks

    def _notified(self, payload: str) -> None:
        event, _, node = payload.partition("|")
        if node != self.node:
            logger.debug("cluster %s: %s %s", self.name, node, event)
            self._wake.set()

    async def _run(self) -> None:
        while True:
            pause = self.settings.heartbeat
            # Cleared before the tick: a notice that arrives during it ticks again at once.
            self._wake.clear()
            try:
                pause = await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("cluster %s: tick failed: %s", self.name, exc)
            try:
                async with asyncio.timeout(max(pause, 0.01)):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _tick(self) -> float:
        """Renew (or rejoin), then take over expired members; return the pause."""
        store = self.store
        if store.epoch is None:
            # Not a member right now (the lease ran out, or a claim found it gone):
            # whatever is queued here may be another member's by now.
            self._fence()
            await self._rejoin()
        else:
            sent = self.loop.time()
            if await store.renew():
                self.deadline = sent + self.settings.lease
                self._arm_fence()
            else:
                logger.error(
                    "cluster %s: node %s lost its lease (renewed too late)", self.name, self.node
                )
                self._fence()
                await self._rejoin()
        dead, next_expiry = await store.expired()
        for node in dead:
            if self.server.scheduler.draining:
                # Draining for shutdown: the jobs of dead members go to the others.
                break
            await self._take_over(node)
        pause = self.settings.heartbeat
        if next_expiry is not None:
            # Wake right after the next member's lease would run out.
            pause = min(pause, next_expiry + 0.05)
        return pause

    async def _take_over(self, node: str) -> None:
        sched = self.server.scheduler
        total = 0
        while not self._closing:
            jobs = await self.store.claim(node)
            if not jobs:
                break
            for stored in jobs:
                self._queue(stored)
            sched.flush()
            total += len(jobs)
        if total:
            self.claimed += total
            logger.warning(
                "cluster %s: took over %d jobs of %s (lease expired)", self.name, total, node
            )

    def _queue(self, stored: StoredJob) -> None:
        if self.server.scheduler.replay(stored) is None:
            # Coalesced onto a job queued here already (or refused): it runs once.
            self.server.store_done(stored)

    async def _rejoin(self) -> None:
        sent = self.loop.time()
        epoch = await self.store.join(self._address())
        self.deadline = sent + self.settings.lease
        self.fenced = False
        self._arm_fence()
        sched = self.server.scheduler
        held = {job.stored.key for job in sched.handles.values() if job.stored is not None}
        after = 0
        adopted = 0
        while True:
            jobs = await self.store.own_jobs(after, _ADOPT_CHUNK)
            if not jobs:
                break
            for stored in jobs:
                after = int(stored.key)  # type: ignore[call-overload]
                if stored.key not in held:
                    self._queue(stored)
                    adopted += 1
            sched.flush()
        logger.error(
            "cluster %s: node %s rejoined (epoch %d); %d of its jobs queued again",
            self.name,
            self.node,
            epoch,
            adopted,
        )

    # ------------------------------------------------------------------ fencing

    def _arm_fence(self) -> None:
        if self._fence_timer is not None:
            self._fence_timer.cancel()
        if not self._closing:
            self._fence_timer = self.loop.call_at(self.deadline, self._deadline_passed)

    def _deadline_passed(self) -> None:
        self._fence_timer = None
        if self.loop.time() >= self.deadline and not self.fenced:
            logger.error(
                "cluster %s: node %s could not renew its lease in time; its queued jobs"
                " are left to the other members",
                self.name,
                self.node,
            )
            self._fence()
            self._wake.set()

    def _fence(self) -> None:
        """Withdraw every queued background job: another member may take it over."""
        if self.fenced:
            return
        self.fenced = True
        self.store.lose_lease()
        sched = self.server.scheduler
        n = sched.withdraw_stored()
        sched.flush()
        self.withdrawn += n
        logger.error("cluster %s: withdrew %d queued jobs", self.name, n)

    def _address(self) -> str:
        return ",".join(f"{h}:{p}" for h, p in self.server.addresses)

    # ------------------------------------------------------------------ views

    async def members(self) -> list[Member]:
        """The cluster's members as the database shows them."""
        return await self.store.members()

    async def snapshot(self) -> dict[str, Any]:
        """The cluster as a JSON-ready dict (``/api/cluster``)."""
        members = await self.members()
        return {
            "cluster": self.name,
            "node": self.node,
            "epoch": self.store.epoch,
            "lease": self.settings.lease,
            "heartbeat": self.settings.heartbeat,
            "fenced": self.fenced,
            "claimed": self.claimed,
            "withdrawn": self.withdrawn,
            "members": [
                {
                    "node": m.node,
                    "epoch": m.epoch,
                    "address": m.address,
                    "pid": m.pid,
                    "alive": m.remaining > 0,
                    "lease_age": round(m.age, 3),
                    "lease_remaining": round(m.remaining, 3),
                    "jobs": m.jobs,
                }
                for m in members
            ],
        }


# ---------------------------------------------------------------------- views


def store_view(server: GearmanServer) -> dict[str, Any]:
    """The store in use as a JSON-ready dict (``/api/store``)."""
    store = server.store
    cluster = store.cluster
    return {
        "kind": store.name,
        "description": store.describe(),
        "persistent": store.persistent,
        "cluster": cluster.name if cluster is not None else None,
        "down": store.is_down,
    }


async def stored_jobs_view(server: GearmanServer, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` stored jobs as JSON-ready dicts (``/api/store/jobs``)."""
    return [
        {
            "key": str(job.key),
            "function": job.function.decode("utf-8", "replace"),
            "unique": job.unique.decode("utf-8", "replace"),
            "priority": int(job.priority),
            "when": job.when,
            "size": len(job.data),
        }
        for job in await server.store.list_jobs(limit)
    ]


# ---------------------------------------------------------------------- admin
#
# ``cluster``: one row per member: node, epoch, state (self/alive/expired), seconds
# since its last renewal, seconds left on its lease, jobs it holds, address.
# ``show store``: the store in use.  ``show stored jobs [N]``: up to N (default 1000)
# stored jobs: key, function, unique, priority, epoch time, data length.  Only the
# commands that read the database answer with a coroutine.


def _show_store(host: AdminHost, peer: Peer, tokens: list[bytes]) -> Reply | None:
    if len(tokens) != 2:
        return None
    return _store_reply(cast("GearmanServer", host))


def _show_stored_jobs(host: AdminHost, peer: Peer, tokens: list[bytes]) -> Reply | None:
    if len(tokens) > 4:
        return None
    limit = STORED_JOBS_DEFAULT
    if len(tokens) == 4:
        count = tokens[3].lower()
        if not count.isdigit():
            return text.invalid_arguments(tokens[0])
        limit = min(int(count), STORED_JOBS_MAX)
    return _stored_jobs_reply(cast("GearmanServer", host), limit)


def _err(code: bytes, message: str) -> bytes:
    return b"ERR " + code + b" " + message.replace(" ", "+").encode(errors="replace") + b"\r\n"


async def _cluster_reply(node: ClusterNode | None) -> bytes:
    if node is None:
        return _err(b"NO_CLUSTER", "this server's store is not clustered")
    try:
        members = await node.members()
    except Exception as exc:
        # StoreError, a driver error or a timeout: the database did not answer.
        return _err(b"QUEUE_ERROR", str(exc) or type(exc).__name__)
    rows = []
    for m in members:
        state = b"self" if m.node == node.node else b"alive" if m.remaining > 0 else b"expired"
        rows.append(
            (
                m.node.encode(),
                str(m.epoch).encode(),
                state,
                f"{m.age:.3f}".encode(),
                f"{m.remaining:.3f}".encode(),
                str(m.jobs).encode(),
                m.address.encode(),
            )
        )
    return text.render_rows(rows)


def _store_reply(server: GearmanServer) -> bytes:
    store = server.store
    cluster = store.cluster
    row = [
        store.name.encode(),
        store.describe().encode(),
        b"persistent" if store.persistent else b"memory",
        cluster.name.encode() if cluster is not None else b"-",
    ]
    return text.render_rows([row])


async def _stored_jobs_reply(server: GearmanServer, limit: int) -> bytes:
    try:
        jobs = await server.store.list_jobs(limit)
    except Exception as exc:
        return _err(b"QUEUE_ERROR", str(exc) or type(exc).__name__)
    return text.render_rows(
        (
            str(job.key).encode(),
            job.function,
            job.unique,
            str(int(job.priority)).encode(),
            str(job.when).encode(),
            str(len(job.data)).encode(),
        )
        for job in jobs
    )
