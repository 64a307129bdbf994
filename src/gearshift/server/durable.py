"""Durable submits and the order of replies while the store works.

A background submit that must reach a persistent store first is pipelined: it starts
its ``store.add`` at once (so a group-committing store can batch many of them), and its
JOB_CREATED (or ERROR) waits in the connection's ``fifo`` until every earlier reply has
been released, so replies leave in request order.  An admin reply that needs the store
waits there the same way.  Any other message that arrives meanwhile waits in
``backlog`` until the fifo drains; while it does, the connection's reader runs the
``held`` tables, which hold each packet back instead of running it.  Other connections
are never held up.

Which submits are background ones, and where their arguments are, is read from
``packets.SUBMITS`` (through ``Scheduler.submit_request``), as everywhere else.
``store_job`` makes one deferred job durable; the HTTP gateway uses it too.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from gearshift.errors import StoreError
from gearshift.protocol.codec import Event, Handler, Packet, queue_error
from gearshift.protocol.packets import MAX_PACKET_TYPE, SUBMITS
from gearshift.records import StoredJob
from gearshift.server.model import Job
from gearshift.server.scheduler import ERR_MAGIC, Scheduler

if TYPE_CHECKING:
    from gearshift.server.connection import Connection
    from gearshift.server.server import GearmanServer

logger = logging.getLogger(__name__)

#: The submit types that create background jobs: durable ones go through the store.
BACKGROUND_SUBMITS: Final = frozenset(t for t, layout in SUBMITS.items() if layout.background)


class PendingAdd:
    """A background job waiting for ``store.add``; its reply waits in the fifo."""

    __slots__ = ("job", "stored", "done", "error")

    def __init__(self, job: Job, stored: StoredJob) -> None:
        self.job = job
        self.stored = stored
        self.done = False
        #: The ERROR packet to answer instead of JOB_CREATED.
        self.error: bytes | None = None


class PendingReply:
    """An admin reply that needs the store (a command the cluster service added)."""

    __slots__ = ("done", "reply")

    def __init__(self) -> None:
        self.done = False
        self.reply = b""


class Tables(NamedTuple):
    """The reader's handler tables of every connection of one server."""

    #: Requests as they run normally (durable background submits through the fifo).
    requests: Sequence[Handler]
    #: ``\\0RES`` packets sent to the server: refused.
    responses: Sequence[Handler]
    #: Requests and responses while replies wait for the store: held back.
    held_requests: Sequence[Handler]
    held_responses: Sequence[Handler]


def _wrong_magic(conn: Connection, args: Sequence[bytes]) -> None:
    conn.sched.send(conn, ERR_MAGIC)


def _durable(ptype: int) -> Handler:
    def handler(conn: Connection, args: list[bytes]) -> None:
        conn.order.submit(ptype, args)

    return handler


def _holder(ptype: int, request: bool) -> Handler:
    def handler(conn: Connection, args: list[bytes]) -> None:
        conn.order.hold(Packet(ptype, tuple(args), request))

    return handler


def build_tables(sched: Scheduler, persistent: bool) -> Tables:
    """The tables for a server's connections (built once, shared by all)."""
    requests: list[Handler] = list(sched.dispatch)
    if persistent:
        for ptype in BACKGROUND_SUBMITS:
            requests[ptype] = _durable(ptype)
    types = range(MAX_PACKET_TYPE + 1)
    return Tables(
        requests,
        [_wrong_magic] * (MAX_PACKET_TYPE + 1),
        [_holder(t, True) for t in types],
        [_holder(t, False) for t in types],
    )


async def store_job(server: GearmanServer, job: Job, stored: StoredJob) -> bytes | None:
    """Make a deferred job durable: None once the store has it, else the ERROR packet
    to answer instead of JOB_CREATED."""
    events = server.job_events
    loop = server.loop
    started = loop.time() if events is not None else 0.0
    try:
        await server.store.add(stored)
    except StoreError as exc:
        logger.error("store add failed for %s: %s", job.handle.decode(errors="replace"), exc)
        return queue_error(str(exc).encode())
    except Exception as exc:
        logger.exception("store add crashed for %s", job.handle.decode(errors="replace"))
        return queue_error(type(exc).__name__.encode())
    if events is not None:
        # gearman_store_commit_seconds (ops hook); group commit wait included.
        events.stored(job.func.name, loop.time() - started)
    return None


#: Messages queued behind a pending store write before reading is paused.
BACKLOG_HIGH_WATER: Final = 1024


class ReplyOrder:
    """One connection's replies in request order, while some wait for the store.

    It asks its connection to switch the reader's tables (``hold_reading``), to run a
    message that waited (``rerun``) and to read again once nothing waits
    (``caught_up``).
    """

    __slots__ = ("conn", "fifo", "backlog", "blocked", "persistent")

    def __init__(self, conn: Connection, persistent: bool) -> None:
        self.conn = conn
        #: Replies in request order: pending store adds and answers queued behind them.
        self.fifo: deque[PendingAdd | PendingReply | bytes] = deque()
        #: Messages that arrived while the fifo was not empty.
        self.backlog: deque[Event] = deque()
        self.blocked = False
        self.persistent = persistent

    @property
    def overfull(self) -> bool:
        """Too much waits behind the store: the connection should stop reading."""
        return self.blocked and len(self.backlog) + len(self.fifo) > BACKLOG_HIGH_WATER

    def _block(self) -> None:
        if not self.blocked:
            self.blocked = True
            self.conn.hold_reading(True)

    def hold(self, event: Event) -> None:
        """A message that arrived while replies wait for the store."""
        if (
            not self.backlog
            and self.persistent
            and type(event) is Packet
            and event.request
            and event.type in BACKGROUND_SUBMITS
        ):
            # Another durable submit: start its add now, its reply waits its turn.
            self.submit(event.type, event.args)
        else:
            self.backlog.append(event)
            self._block()

    def submit(self, ptype: int, args: Sequence[bytes]) -> None:
        """A durable background submit: start ``store.add``; its reply joins the fifo."""
        conn = self.conn
        sched = conn.sched
        out = conn.out
        before = len(out)
        job = sched.submit_request(conn, ptype, args, defer=True)
        fifo = self.fifo
        if job is None:
            # Answered at once (coalesced, refused); behind pending adds it must wait.
            if fifo and len(out) > before:
                fifo.append(b"".join(out[before:]))
                del out[before:]
            return
        entry = PendingAdd(job, sched.stored_record(job))
        # The record holds the payload as bytes (a large one arrives as a bytearray):
        # let the job share that copy rather than keep a second one.
        job.data = entry.stored.data
        fifo.append(entry)
        self._block()
        server = conn.server
        server.track(server.loop.create_task(self._store_add(entry)))

    def later(self, reply: Coroutine[Any, Any, bytes]) -> None:
        """An admin reply that the store gives: later messages wait behind it."""
        entry = PendingReply()
        self.fifo.append(entry)
        self._block()
        server = self.conn.server
        server.track(server.loop.create_task(self._admin_reply(entry, reply)))

    async def _admin_reply(self, entry: PendingReply, later: Coroutine[Any, Any, bytes]) -> None:
        try:
            entry.reply = await later
        except Exception as exc:
            logger.exception("admin command failed")
            entry.reply = b"ERR UNKNOWN_ERROR " + type(exc).__name__.encode() + b"\r\n"
        entry.done = True
        self.release()

    async def _store_add(self, entry: PendingAdd) -> None:
        entry.error = await store_job(self.conn.server, entry.job, entry.stored)
        entry.done = True
        self.release()

    def release(self) -> None:
        """Send the replies at the head of the fifo that are settled, in order; once
        none waits, run what was held back."""
        conn = self.conn
        sched = conn.sched
        fifo = self.fifo
        while fifo:
            head = fifo[0]
            if isinstance(head, bytes):
                fifo.popleft()
                sched.send(conn, head)
                continue
            if not head.done:
                break
            fifo.popleft()
            if isinstance(head, PendingReply):
                sched.send(conn, head.reply)
            elif head.error is None:
                sched.activate(head.job, conn, head.stored)
            else:
                sched.abort(head.job, conn, head.error)
        if not fifo:
            backlog = self.backlog
            self.blocked = False
            conn.hold_reading(False)
            while backlog and not self.blocked and not conn.closed:
                batch = list(backlog)
                backlog.clear()
                self._rerun(batch)
            if not self.blocked:
                conn.caught_up()
        sched.flush()

    def _rerun(self, events: list[Event]) -> None:
        """Run messages that waited, in order; those after one that waits again for
        the store are held again (a durable submit among them starts its add)."""
        conn = self.conn
        for event in events:
            if conn.closed:
                return
            if self.blocked:
                self.hold(event)
            elif not conn.rerun(event):
                return

    def clear(self) -> None:
        """The connection is gone: nothing held will run."""
        self.backlog.clear()


__all__ = [
    "BACKGROUND_SUBMITS",
    "BACKLOG_HIGH_WATER",
    "PendingAdd",
    "PendingReply",
    "ReplyOrder",
    "Tables",
    "build_tables",
    "store_job",
]
