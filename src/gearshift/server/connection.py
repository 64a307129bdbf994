"""One ``asyncio.Protocol`` per peer: bytes -> packets -> scheduler -> one write per batch.

A connection is also the scheduler's ``Peer`` (one object per peer, no lookups).
Packets are parsed in ``data_received`` itself with the codec's table (``ARGC``) and
limits, rather than through ``codec.Decoder``: on the server's hot path that saves a
Packet object, a list and a buffer copy per packet.

A header reserves nothing: the per-type limits of ``protocol.packets`` (``BODY_LIMIT``,
``leading_args``) are checked as soon as it is read, and a large payload's buffer grows
with the bytes that actually arrive (``_PayloadReceiver``), so a peer that announces a
gigabyte and sends a few bytes costs a few bytes.
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
import logging
import socket
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from struct import Struct
from typing import TYPE_CHECKING, Any, Final, cast

from gearshift.errors import PacketTooLarge, StoreError
from gearshift.protocol.admin import TooManyTokens, split_command
from gearshift.protocol.codec import AdminLine, Event, Packet
from gearshift.protocol.packets import (
    ARG_LIMIT,
    ARGC,
    HEADER_SIZE,
    MAX_PACKET_TYPE,
    REQ,
    RES,
    PacketType,
    leading_args,
)
from gearshift.records import StoredJob
from gearshift.server import admin
from gearshift.server.cluster import admin_later
from gearshift.server.jobs import (
    ERR_BAD_EPOCH,
    ERR_MAGIC,
    NORMAL,
    Args,
    DropPeer,
    Job,
    Peer,
    _error,
    strtoll,
)

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
#: Packets larger than this that arrive in pieces get their payload received on its
#: own (``_PayloadReceiver``) rather than joined in ``rbuf``.  Only payload types can
#: be this large (``packets.BODY_LIMIT``).
_BIG_PACKET: Final = 256 * 1024
#: The least a large payload's buffer grows by once full: it doubles from what has
#: arrived, so it is never more than twice the bytes received plus this.
_GROW_FLOOR: Final = 16 * 1024
#: A payload up to this size may get its whole buffer at once (untouched, so no RAM
#: until the bytes arrive), saving the copies of growing it, as long as all such
#: reservations together stay under ``_RESERVE_TOTAL``: a peer announcing sizes it
#: never sends can hold at most that much address space, however many connections it
#: opens; past it, buffers grow with the bytes received.
_RESERVE_EACH: Final = 4 * 1024 * 1024
_RESERVE_TOTAL: Final = 64 * 1024 * 1024
#: Above this many bytes queued for one peer, write the pieces without joining them.
_JOIN_LIMIT: Final = 256 * 1024
#: Events queued behind a pending store write before reading is paused.
_BACKLOG_HIGH_WATER: Final = 1024


def _zero_extend(buf: bytearray, size: int) -> None:
    """Grow ``buf`` to ``size`` bytes, the new ones zeroed (the portable way)."""
    buf += bytes(size - len(buf))


def _find_resize() -> Callable[[bytearray, int], None]:
    """Grow a bytearray in place without initialising the new bytes, where CPython's C
    API allows.

    A payload's buffer is overwritten by the socket before anyone reads it, so zeroing
    its new part (a memset of everything received, on the event loop) is wasted work.
    ``PyByteArray_Resize`` is a ``realloc``, which for large blocks on Linux moves page
    mappings (``mremap``) rather than copying.  Falls back to ``_zero_extend``.
    """
    try:
        import ctypes

        fn = ctypes.pythonapi.PyByteArray_Resize
    except (ImportError, AttributeError):  # not CPython, or no ctypes
        return _zero_extend
    fn.restype = ctypes.c_int
    fn.argtypes = (ctypes.py_object, ctypes.c_ssize_t)
    probe = bytearray(b"ab")
    try:
        fn(probe, 16)
    except Exception:  # an interpreter whose C API does not behave as CPython's
        return _zero_extend
    if len(probe) != 16 or probe[:2] != b"ab":
        return _zero_extend
    return cast(Callable[[bytearray, int], None], fn)


_resize = _find_resize()


class _PayloadReceiver(asyncio.BufferedProtocol):
    """Receives the rest of one large payload into its final buffer, grown as it arrives.

    On a plain TCP connection it is installed with ``transport.set_protocol``, so the
    event loop reads from the socket into ``payload`` itself (no intermediate bytes
    objects, no joining).  The buffer holds what has arrived plus room for more: when
    full it doubles (at least ``_GROW_FLOOR``, never past the payload's end), so
    memory follows the bytes received, not the size a header announced.  It never
    offers more room than the bytes still missing, so nothing after the packet is read
    into it.  Where reads cannot be redirected (TLS) the connection hands it its data
    with ``feed``.  When the payload is complete the packet runs with the buffer as its
    last argument (no copy) and the connection reads again itself.
    """

    __slots__ = ("conn", "ptype", "request", "args", "payload", "fill", "size", "reserved")

    def __init__(
        self,
        conn: Connection,
        ptype: int,
        request: bool,
        heads: list[bytes],
        first: bytes | memoryview,
        size: int,
    ) -> None:
        self.conn = conn
        self.ptype = ptype
        self.request = request
        self.args = heads
        self.payload = bytearray(first)
        #: Bytes of the payload received; ``len(payload)`` is the room reserved.
        self.fill = len(self.payload)
        #: The payload's full length, as announced.
        self.size = size
        #: Bytes of the server's reservation budget this buffer holds (see
        #: ``_RESERVE_EACH``): all of ``size``, or 0 when the buffer grows instead.
        self.reserved = 0
        server = conn.server
        if size <= _RESERVE_EACH and server.payload_reserved + size <= _RESERVE_TOTAL:
            server.payload_reserved += size
            self.reserved = size
            _resize(self.payload, size)

    def get_buffer(self, sizehint: int) -> memoryview:
        # The event loop has released the previous buffer by now (it holds it until
        # buffer_updated returns), so this is where the bytearray may be resized.
        payload = self.payload
        fill = self.fill
        if fill == len(payload):
            room = min(self.size, max(2 * fill, _GROW_FLOOR))
            try:
                _resize(payload, room)
            except BufferError:
                # Still exported (an event loop keeping a view): continue in a copy.
                payload = self.payload = bytearray(payload)
                _resize(payload, room)
        return memoryview(payload)[fill:]

    def buffer_updated(self, nbytes: int) -> None:
        conn = self.conn
        if conn.track_idle:
            conn.last_active = conn.server.loop.time()
        self.fill += nbytes
        if self.fill < self.size:
            return
        transport = conn.transport
        if transport is not None:
            transport.set_protocol(conn)
        self.deliver()
        if conn.sched.dirty:
            conn.sched.flush()

    def feed(self, data: bytes) -> int:
        """Append the start of ``data`` that belongs to the payload (the copying path,
        for connections whose reads cannot be redirected); returns the bytes used."""
        fill = self.fill
        n = min(self.size - fill, len(data))
        part = data if n == len(data) else memoryview(data)[:n]
        if self.reserved:
            self.payload[fill : fill + n] = part
        else:
            self.payload += part
        self.fill = fill + n
        return n

    def release(self) -> None:
        """Give the reservation back (the payload is complete, or the peer is gone)."""
        if self.reserved:
            self.conn.server.payload_reserved -= self.reserved
            self.reserved = 0

    def deliver(self) -> None:
        """Run the packet, the complete payload as its last argument."""
        # The scheduler treats the payload as read-only bytes; it converts it with
        # bytes() where it needs a hashable or storable value (Scheduler.submit,
        # Scheduler.stored_record).
        self.release()
        self.args.append(cast(bytes, self.payload))
        self.conn.run_packet(self.ptype, self.request, self.args)

    def pause_writing(self) -> None:
        self.conn.pause_writing()

    def resume_writing(self) -> None:
        self.conn.resume_writing()

    def eof_received(self) -> bool | None:
        return self.conn.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.release()
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
        "need",
        "max_packet_size",
        "plain_limit",
        "persistent",
        "track_idle",
    )

    #: Large payloads are received by ``_PayloadReceiver`` reading the socket itself;
    #: TLSConnection feeds it from ``data_received`` instead (no BufferedProtocol switch
    #: under the TLS layer).  The limits and the buffer growth are the same.
    direct = True

    def __init__(self, server: GearmanServer) -> None:
        Peer.__init__(self)
        self.server = server
        self.sched = server.scheduler
        self.transport: asyncio.Transport | None = None
        self.rbuf = bytearray()
        #: The large payload still arriving, on the copying path (``direct`` False).
        self.big: _PayloadReceiver | None = None
        self.need = 0
        self.max_packet_size = server.config.max_packet_size
        #: Bodies up to this size need no closer look: no type's limit is below it.
        #: One compare per packet against it keeps every size check off the hot path.
        self.plain_limit = min(ARG_LIMIT, self.max_packet_size)
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
        if self.big is not None:
            self.big.release()
            self.big = None
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
            # A large payload on the copying path: appended to, not re-joined.
            n = big.feed(data)
            if big.fill < big.size:
                return
            self.big = None
            data = data[n:]
            big.deliver()
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
        plain_limit = self.plain_limit
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
            start = pos + HEADER_SIZE
            stop = start + size
            if size > plain_limit:
                # Rare: only a body this large can break the configured maximum or its
                # type's limits, and only one this large is received on its own.
                max_size = self.max_packet_size
                if size > max_size:
                    self.close(f"packet type {ptype} body of {size} bytes exceeds {max_size}")
                    break
                try:
                    split = leading_args(data, ptype, size, start, stop if stop < end else end)
                except PacketTooLarge as exc:
                    self.close(str(exc))
                    break
                if stop > end:
                    self._partial_large(data, pos, end, stop, ptype, magic == REQ, split)
                    break
            elif stop > end:
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

    def _partial_large(
        self,
        data: bytes,
        pos: int,
        end: int,
        stop: int,
        ptype: int,
        request: bool,
        split: tuple[list[bytes], int] | None,
    ) -> None:
        """Keep the unfinished packet ``data[pos:stop]`` (body above ``ARG_LIMIT``) of
        which ``data[pos:end]`` is here, without reserving more than that.

        ``split`` is what ``leading_args`` found: the arguments before the payload and
        where it starts, or None while they are still arriving (looked at again with the
        next byte, so one too long is refused then).  A large payload whose arguments
        are known is received on its own; a smaller packet waits in ``rbuf``.
        """
        if split is None or stop - pos <= _BIG_PACKET:
            self.rbuf += memoryview(data)[pos:end]
            self.need = end - pos + 1 if split is None else stop - pos
            return
        heads, at = split
        receiver = _PayloadReceiver(
            self, ptype, request, heads, memoryview(data)[at:end], stop - at
        )
        transport = self.transport
        if self.direct and transport is not None:
            transport.set_protocol(receiver)
        else:
            self.big = receiver

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
            when = strtoll(args[2])
            if when is None:
                sched.send(self, ERR_BAD_EPOCH)
                job = None
            else:
                job = sched.submit(
                    self, args[0], args[1], args[3], priority, True, when=when, defer=True
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
