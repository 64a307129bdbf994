"""One ``asyncio.Protocol`` per peer: bytes -> packets -> scheduler -> one write per batch.

A connection is also the scheduler's ``Peer`` (one object per peer, no lookups).
Packets are parsed in ``data_received`` itself with the codec's table (``ARGC``) and
limits, rather than through ``codec.Decoder``: on the server's hot path that saves a
Packet object, a list and a buffer copy per packet.
Everything a ``data_received`` call produces, for this peer and for the peers it
touches (fan-out, NOOPs), is written once at the end of the batch.

Background submits that must reach a persistent store first are pipelined: each one
starts its ``store.add`` at once (so a group-committing store can batch many of them),
and its JOB_CREATED (or ERROR) waits in the connection's ``fifo`` until every earlier
reply has been released, so replies leave in submit order.  Any other packet that
arrives while adds are pending waits in ``backlog`` until the fifo drains.  Other
connections are never held up.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from struct import Struct
from typing import TYPE_CHECKING, Any, Final, cast

from gearshift.errors import StoreError
from gearshift.protocol.admin import TooManyTokens, split_command
from gearshift.protocol.codec import AdminLine, Event, Packet
from gearshift.protocol.packets import ARGC, HEADER_SIZE, MAX_PACKET_TYPE, REQ, RES, PacketType
from gearshift.server import admin
from gearshift.server.cluster import admin_later
from gearshift.server.jobs import ERR_MAGIC, NORMAL, Args, DropPeer, Job, Peer, _error, atoi
from gearshift.store.base import StoredJob

if TYPE_CHECKING:
    from gearshift.server.server import GearmanServer

logger = logging.getLogger(__name__)

_T = PacketType
#: Background submit types -> (priority, has epoch, is reduce).
_BG_SUBMITS: Final[dict[int, tuple[int, bool, bool]]] = {
    _T.SUBMIT_JOB_BG: (NORMAL, False, False),
    _T.SUBMIT_JOB_HIGH_BG: (0, False, False),
    _T.SUBMIT_JOB_LOW_BG: (2, False, False),
    _T.SUBMIT_JOB_EPOCH: (NORMAL, True, False),
    _T.SUBMIT_REDUCE_JOB_BACKGROUND: (NORMAL, False, True),
}
_unpack_header = Struct(">4sII").unpack_from
#: Packet types whose last argument is an opaque payload the server only queues and
#: forwards.  A large one is received straight into a buffer of its own size
#: (``_PayloadReceiver``) and kept as that buffer: no copy in user space.
_PAYLOAD_LAST: Final = frozenset(
    {
        _T.SUBMIT_JOB,
        _T.SUBMIT_JOB_BG,
        _T.SUBMIT_JOB_HIGH,
        _T.SUBMIT_JOB_HIGH_BG,
        _T.SUBMIT_JOB_LOW,
        _T.SUBMIT_JOB_LOW_BG,
        _T.SUBMIT_JOB_EPOCH,
        _T.SUBMIT_REDUCE_JOB,
        _T.SUBMIT_REDUCE_JOB_BACKGROUND,
        _T.WORK_DATA,
        _T.WORK_WARNING,
        _T.WORK_COMPLETE,
        _T.WORK_EXCEPTION,
        _T.ECHO_REQ,
    }
)


class _PendingAdd:
    """A background job waiting for ``store.add``; its reply waits in the fifo."""

    __slots__ = ("job", "stored", "done", "error")

    def __init__(self, job: Job, stored: StoredJob) -> None:
        self.job = job
        self.stored = stored
        self.done = False
        #: The ERROR packet to answer instead of JOB_CREATED.
        self.error: bytes | None = None


class _PendingReply:
    """An admin reply that needs the store (gearshift.server.cluster.admin_later)."""

    __slots__ = ("done", "reply")

    def __init__(self) -> None:
        self.done = False
        self.reply = b""


#: The longest admin line, its terminator included (gearmand's buffer size).
ADMIN_LINE_LIMIT: Final = 8192
#: Packets larger than this that arrive in pieces get a buffer of their exact size.
_BIG_PACKET: Final = 256 * 1024
#: Above this many bytes queued for one peer, write the pieces without joining them.
_JOIN_LIMIT: Final = 256 * 1024
#: Events queued behind a pending store write before reading is paused.
_BACKLOG_HIGH_WATER: Final = 1024


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _find_uninitialized_bytearray() -> Callable[[int], bytearray]:
    """``bytearray(n)`` without zero-filling it, where CPython's C API allows.

    A large payload's buffer is overwritten by the socket before anyone reads it, so
    clearing it first (a memset of the whole payload) is wasted work.  Uses
    ``PyByteArray_FromStringAndSize(NULL, n)``; falls back to ``bytearray(n)``.
    """
    try:
        import ctypes

        api = ctypes.pythonapi
        fn = api.PyByteArray_FromStringAndSize
    except (ImportError, AttributeError):  # not CPython, or no ctypes
        return bytearray
    fn.restype = ctypes.py_object
    fn.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
    probe = fn(None, 16)
    if type(probe) is not bytearray or len(probe) != 16:
        return bytearray
    return cast(Callable[[int], bytearray], lambda size: fn(None, size))


_uninitialized_bytearray = _find_uninitialized_bytearray()


def _split_heads(
    buf: bytes | bytearray, start: int, end: int, count: int
) -> tuple[list[bytes], int] | None:
    """The ``count`` NUL-terminated arguments in ``buf[start:end]``, and where the next
    one starts; None if a NUL is missing."""
    heads: list[bytes] = []
    at = start
    for _ in range(count):
        nul = buf.find(b"\0", at, end)
        if nul < 0:
            return None
        heads.append(bytes(buf[at:nul]))
        at = nul + 1
    return heads, at


class _PayloadReceiver(asyncio.BufferedProtocol):
    """Receives the rest of one large payload straight into its final buffer.

    Installed with ``transport.set_protocol`` while a large payload arrives, so the
    event loop reads from the socket into ``payload`` itself (no intermediate bytes
    objects, no joining), and asks for exactly the bytes still missing, so nothing
    after the packet is read into it.  When the payload is complete the connection
    is reinstalled and runs the packet.
    """

    __slots__ = ("conn", "ptype", "request", "args", "payload", "fill")

    def __init__(
        self, conn: Connection, ptype: int, request: bool, heads: list[bytes], payload: bytearray
    ) -> None:
        self.conn = conn
        self.ptype = ptype
        self.request = request
        self.args = heads
        self.payload = payload
        self.fill = 0

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.payload)[self.fill :]

    def buffer_updated(self, nbytes: int) -> None:
        conn = self.conn
        if conn.track_idle:
            conn.last_active = conn.server.loop.time()
        self.fill += nbytes
        if self.fill < len(self.payload):
            return
        transport = conn.transport
        if transport is not None:
            transport.set_protocol(conn)
        # The scheduler treats the payload as read-only bytes; it converts it with
        # bytes() where it needs a hashable or storable value (Scheduler.submit,
        # Scheduler.stored_record).
        self.args.append(cast(bytes, self.payload))
        conn.run_packet(self.ptype, self.request, self.args)
        if conn.sched.dirty:
            conn.sched.flush()

    def pause_writing(self) -> None:
        self.conn.pause_writing()

    def resume_writing(self) -> None:
        self.conn.resume_writing()

    def eof_received(self) -> bool | None:
        return self.conn.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.connection_lost(exc)


class Connection(Peer, asyncio.Protocol):
    """A client, worker or admin connection."""

    __slots__ = (
        "server",
        "sched",
        "transport",
        "backlog",
        "fifo",
        "blocked",
        "paused_for_write",
        "paused_for_backlog",
        "last_active",
        "port",
        "rbuf",
        "big",
        "big_fill",
        "need",
        "max_packet_size",
        "persistent",
        "track_idle",
    )

    #: Large payloads are received with ``_PayloadReceiver``; TLSConnection keeps the
    #: copying path (no BufferedProtocol switch under the TLS layer).
    direct = True

    def __init__(self, server: GearmanServer) -> None:
        Peer.__init__(self)
        self.server = server
        self.sched = server.scheduler
        self.transport: asyncio.Transport | None = None
        self.rbuf = bytearray()
        #: The buffer of a large packet still arriving, allocated once at its full size.
        self.big: bytearray | None = None
        self.big_fill = 0
        self.need = 0
        self.max_packet_size = server.config.max_packet_size
        self.persistent = server.persistent
        self.track_idle = server.config.idle_timeout is not None
        self.backlog: deque[Event] = deque()
        #: Replies in submit order: pending store adds and answers queued behind them.
        self.fifo: deque[_PendingAdd | _PendingReply | bytes] = deque()
        self.blocked = False
        self.paused_for_write = False
        self.paused_for_backlog = False
        self.last_active = 0.0
        self.port = 0

    # ------------------------------------------------------------------ asyncio

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.host = str(peer[0])
            self.port = int(peer[1])
        if sock is not None:
            self.fd = sock.fileno()
            self._tune(sock)
        transport.set_write_buffer_limits(high=self.server.config.write_high_water)
        self.last_active = self.server.loop.time()
        connections = self.server.connections
        limit = self.server.config.max_connections
        if limit and len(connections) >= limit:
            self.server.warn_connection_limit()
            self.closed = True  # never registered; nothing it sends is processed
            transport.abort()
            return
        self.sched.connect(self)
        connections.add(self)
        if len(connections) >= self.server.fd_pressure:
            self.server.warn_fd_pressure()

    def _tune(self, sock: socket.socket) -> None:
        cfg = self.server.config
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if cfg.keepalive:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                for opt, value in (
                    ("TCP_KEEPIDLE", cfg.keepalive_idle),
                    ("TCP_KEEPINTVL", cfg.keepalive_interval),
                    ("TCP_KEEPCNT", cfg.keepalive_count),
                ):
                    if value > 0 and hasattr(socket, opt):
                        sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
        except OSError as exc:
            logger.debug("socket options on fd %d: %s", self.fd, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.backlog.clear()
        self.sched.disconnect(self)
        self.sched.flush()
        self.transport = None

    def pause_writing(self) -> None:
        # The peer does not read its replies: stop reading its requests.
        self.paused_for_write = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.paused_for_write = False
        self._update_reading()

    def _update_reading(self) -> None:
        transport = self.transport
        if transport is None or self.closed:
            return
        want_paused = self.paused_for_write or self.paused_for_backlog
        if want_paused and transport.is_reading():
            transport.pause_reading()
        elif not want_paused and not transport.is_reading():
            transport.resume_reading()

    def flush(self) -> None:
        out = self.out
        transport = self.transport
        if transport is None or self.closed or not out:
            out.clear()
            return
        if len(out) == 1:
            transport.write(out[0])
        elif sum(map(len, out)) > _JOIN_LIMIT:
            # Large payloads were queued as separate pieces: hand them over uncopied.
            transport.writelines(out)
        else:
            transport.write(b"".join(out))
        out.clear()

    def close(self, reason: str) -> None:
        """Drop this peer (after writing what is already queued for it)."""
        if self.transport is None or self.closed:
            return
        logger.warning("closing connection fd %d from %s: %s", self.fd, self.host, reason)
        if self.out:
            self.flush()
        self.transport.close()
        self.sched.disconnect(self)

    # ------------------------------------------------------------------ input

    def data_received(self, data: bytes) -> None:
        # The hot path.  Packets are parsed straight out of ``data`` (no Packet
        # objects, no intermediate list) and dispatched as they are found; only a
        # trailing partial message is kept in ``rbuf``, and only until ``need``
        # bytes are there, so a large payload arriving in chunks is joined once.
        if self.track_idle:
            self.last_active = self.server.loop.time()
        big = self.big
        if big is not None:
            # Filling a large packet's preallocated buffer: no regrowth, no re-joining.
            fill = self.big_fill
            n = min(len(data), len(big) - fill)
            big[fill : fill + n] = memoryview(data)[:n]
            fill += n
            if fill < len(big):
                self.big_fill = fill
                return
            self.big = None
            data = data[n:]
            self._big_packet(big)
            del big
            if self.closed or not data:
                if self.sched.dirty:
                    self.sched.flush()
                return
        rbuf = self.rbuf
        if rbuf:
            rbuf += data
            if len(rbuf) < self.need:
                return
            data = bytes(rbuf)
            rbuf.clear()
        sched = self.sched
        dispatch = sched.dispatch
        counts = sched.stats.packets
        max_size = self.max_packet_size
        pos = 0
        end = len(data)
        while pos < end:
            if data[pos]:
                nl = data.find(b"\n", pos, pos + ADMIN_LINE_LIMIT)
                if nl < 0:
                    if end - pos >= ADMIN_LINE_LIMIT:
                        # gearmand reads admin lines into an 8 KiB buffer and drops
                        # the connection when one does not fit.
                        self.close(f"admin line longer than {ADMIN_LINE_LIMIT} bytes")
                        break
                    rbuf += data[pos:]
                    self.need = end - pos + 1
                    break
                stop = nl - 1 if nl > pos and data[nl - 1] == 13 else nl
                line = AdminLine(data[pos:stop])
                pos = nl + 1
                counts[0] += 1
                if self.blocked:
                    self.backlog.append(line)
                elif not self._admin(line):
                    break
                continue
            if end - pos < HEADER_SIZE:
                if end - pos >= 4 and data[pos : pos + 4] not in (REQ, RES):
                    self.close(f"bad magic {data[pos : pos + 4]!r}")
                    break
                rbuf += data[pos:]
                self.need = HEADER_SIZE
                break
            magic, ptype, size = _unpack_header(data, pos)
            if magic != REQ and magic != RES:
                self.close(f"bad magic {magic!r}")
                break
            if not 0 < ptype <= MAX_PACKET_TYPE:
                self.close(f"unknown packet type {ptype}")
                break
            if size > max_size:
                self.close(f"packet type {ptype} body of {size} bytes exceeds {max_size}")
                break
            start = pos + HEADER_SIZE
            stop = start + size
            if stop > end:
                if stop - pos > _BIG_PACKET:
                    if (
                        self.direct
                        and ptype in _PAYLOAD_LAST
                        and self._receive_payload(data, start, end, stop, ptype, magic == REQ)
                    ):
                        break
                    big = bytearray(stop - pos)
                    big[: end - pos] = memoryview(data)[pos:]
                    self.big = big
                    self.big_fill = end - pos
                else:
                    rbuf += data[pos:]
                    self.need = stop - pos
                break
            argc = ARGC[ptype]
            if argc == 0:
                args: list[bytes] = []
            elif argc == 1:
                args = [data[start:stop]]
            else:
                args = data[start:stop].split(b"\0", argc - 1)
                if len(args) != argc:
                    self.close(f"{PacketType(ptype).name} needs {argc} arguments, got {len(args)}")
                    break
            pos = stop
            counts[ptype] += 1
            if self.blocked:
                self._while_blocked(Packet(ptype, tuple(args), magic == REQ))
                continue
            if magic != REQ:
                sched.send(self, ERR_MAGIC)
                continue
            try:
                if self.persistent and ptype in _BG_SUBMITS:
                    self._persist_submit(ptype, args)
                else:
                    dispatch[ptype](self, args)
            except DropPeer as exc:
                self.close(str(exc))
                break
            if self.closed:
                break
        if self.blocked and len(self.backlog) + len(self.fifo) > _BACKLOG_HIGH_WATER:
            if not self.paused_for_backlog:
                self.paused_for_backlog = True
                self._update_reading()
        if sched.dirty:
            sched.flush()

    def _big_packet(self, buf: bytearray) -> None:
        """Parse and run one large packet from its own buffer (header already checked).

        Each argument is copied out of ``buf`` exactly once; ``buf`` is then dropped.
        """
        magic, ptype, _ = _unpack_header(buf, 0)
        argc = ARGC[ptype]
        split = _split_heads(buf, HEADER_SIZE, len(buf), argc - 1)
        if split is None:
            self.close(f"{PacketType(ptype).name} needs {argc} arguments")
            return
        args, at = split
        if argc:
            with memoryview(buf) as view:
                args.append(bytes(view[at:]))
        self.run_packet(ptype, magic == REQ, args)

    def _receive_payload(
        self, data: bytes, start: int, end: int, stop: int, ptype: int, request: bool
    ) -> bool:
        """Start receiving a large payload into its own buffer; False if not possible.

        ``data[start:end]`` is the part of the body that is here, ``stop`` where the
        body ends.  The arguments before the payload must all be in this part.
        """
        transport = self.transport
        split = _split_heads(data, start, end, ARGC[ptype] - 1)
        if transport is None or split is None:
            return False
        heads, at = split
        payload = _uninitialized_bytearray(stop - at)
        receiver = _PayloadReceiver(self, ptype, request, heads, payload)
        if end > at:
            payload[: end - at] = memoryview(data)[at:end]
            receiver.fill = end - at
        transport.set_protocol(receiver)
        return True

    def run_packet(self, ptype: int, request: bool, args: list[bytes]) -> None:
        """Run one packet that arrived on its own (a large one)."""
        self.sched.stats.packets[ptype] += 1
        if self.closed:
            return
        if self.blocked:
            self._while_blocked(Packet(ptype, tuple(args), request))
        elif not request:
            self.sched.send(self, ERR_MAGIC)
        else:
            self._run(ptype, args)

    def _run(self, ptype: int, args: Args) -> bool:
        """Run one request outside ``data_received`` (which inlines this); False if the
        peer was dropped for it."""
        try:
            if self.persistent and ptype in _BG_SUBMITS:
                self._persist_submit(ptype, args)
            else:
                self.sched.dispatch[ptype](self, args)
        except DropPeer as exc:
            self.close(str(exc))
            return False
        return True

    def _while_blocked(self, event: Event) -> None:
        """An event that arrived while store adds are pending for this connection."""
        if (
            not self.backlog
            and type(event) is Packet
            and event.request
            and event.type in _BG_SUBMITS
        ):
            # Another durable submit: start its add now, its reply waits its turn.
            self._persist_submit(event.type, event.args)
        else:
            self.backlog.append(event)
            self.blocked = True

    def _process(self, events: Sequence[Event]) -> None:
        """Run events that waited in the backlog behind store writes."""
        for event in events:
            if self.closed:
                return
            if self.blocked:
                self._while_blocked(event)
                continue
            if type(event) is Packet:
                ptype, args, request = event
                if not request:
                    self.sched.send(self, ERR_MAGIC)
                elif not self._run(ptype, args):
                    return
            elif not self._admin(cast(AdminLine, event)):
                return

    def _admin(self, line: bytes) -> bool:
        try:
            tokens = split_command(line)
        except TooManyTokens as exc:
            self.close(f"admin command: {exc}")
            return False
        later = admin_later(self.server, tokens)
        if isinstance(later, bytes):
            self.sched.send(self, later)
            return True
        if later is not None:
            # Answered when the store has; later events wait behind it in the fifo.
            entry = _PendingReply()
            self.fifo.append(entry)
            self.blocked = True
            self.server.track(self.server.loop.create_task(self._admin_reply(entry, later)))
            return True
        reply = admin.execute(self.sched, self.server, self, tokens)
        self.sched.send(self, reply)
        return True

    async def _admin_reply(self, entry: _PendingReply, later: Coroutine[Any, Any, bytes]) -> None:
        try:
            entry.reply = await later
        except Exception as exc:
            logger.exception("admin command failed")
            entry.reply = b"ERR UNKNOWN_ERROR " + type(exc).__name__.encode() + b"\r\n"
        entry.done = True
        self._release()

    # ------------------------------------------------------------------ store

    def _persist_submit(self, ptype: int, args: Args) -> None:
        """A durable background submit: start ``store.add``; its reply joins the fifo."""
        priority, epoch, reduce = _BG_SUBMITS[ptype]
        sched = self.sched
        out = self.out
        before = len(out)
        if reduce:
            if len(args[2]) > 64:
                sched.dispatch[ptype](self, args)
                job = None
            else:
                job = sched.submit(self, args[0], args[1], args[4], priority, True, defer=True)
        elif epoch:
            job = sched.submit(
                self, args[0], args[1], args[3], priority, True, when=atoi(args[2]), defer=True
            )
        else:
            job = sched.submit(self, args[0], args[1], args[2], priority, True, defer=True)
        fifo = self.fifo
        if job is None:
            # Answered at once (coalesced, refused); behind pending adds it must wait.
            if fifo and len(out) > before:
                fifo.append(b"".join(out[before:]))
                del out[before:]
            return
        entry = _PendingAdd(job, sched.stored_record(job))
        # The record holds the payload as bytes (a large one arrives as a bytearray):
        # let the job share that copy rather than keep a second one.
        job.data = entry.stored.data
        fifo.append(entry)
        self.blocked = True
        self.server.track(self.server.loop.create_task(self._store_add(entry)))

    async def _store_add(self, entry: _PendingAdd) -> None:
        job = entry.job
        events = self.server.job_events
        started = self.server.loop.time() if events is not None else 0.0
        try:
            await self.server.store.add(entry.stored)
            if events is not None:
                # gearman_store_commit_seconds (ops hook); group commit wait included.
                events.stored(job.func.name, self.server.loop.time() - started)
        except StoreError as exc:
            logger.error("store add failed for %s: %s", job.handle.decode(errors="replace"), exc)
            entry.error = _error(b"QUEUE_ERROR", str(exc).encode() or b"QUEUE_ERROR")
        except Exception as exc:
            logger.exception("store add crashed for %s", job.handle.decode(errors="replace"))
            entry.error = _error(b"QUEUE_ERROR", type(exc).__name__.encode())
        entry.done = True
        self._release()

    def _release(self) -> None:
        """Send the replies at the head of the fifo whose adds are done, in order."""
        sched = self.sched
        fifo = self.fifo
        while fifo:
            head = fifo[0]
            if isinstance(head, bytes):
                fifo.popleft()
                sched.send(self, head)
                continue
            if not head.done:
                break
            fifo.popleft()
            if isinstance(head, _PendingReply):
                sched.send(self, head.reply)
            elif head.error is None:
                sched.activate(head.job, self, head.stored)
            else:
                sched.abort(head.job, self, head.error)
        if not fifo:
            backlog = self.backlog
            self.blocked = False
            while backlog and not self.blocked and not self.closed:
                batch = list(backlog)
                backlog.clear()
                self._process(batch)
            if self.paused_for_backlog and not self.blocked:
                self.paused_for_backlog = False
                self._update_reading()
        sched.flush()
