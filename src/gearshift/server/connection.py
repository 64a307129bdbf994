"""One ``asyncio.Protocol`` per peer: the asyncio glue between a socket and the scheduler.

A connection is also the scheduler's ``Peer`` (one object per peer, no lookups).  What
it owns is the connection's life (accept, limits, socket options, close), reading,
flow control, and one write per batch:

* Reading: ``protocol.codec.PacketReader``, the one reader of the wire, calls the
  scheduler's handler for each packet straight from the bytes (no Packet object, no
  list, no buffer copy per packet on this path) and ``_admin_line`` for admin lines.
  Its handler tables come from ``durable.build_tables``: durable background submits go
  through the store first, and while replies wait for the store every message is held
  back (``durable.ReplyOrder``).
* A header reserves nothing: the reader checks the per-type limits of
  ``protocol.packets`` as soon as it is read, and a large payload's buffer grows with
  the bytes that actually arrive (``_PayloadReceiver``), so a peer that announces a
  gigabyte and sends a few bytes costs a few bytes.
* Everything a ``data_received`` call produces, for this peer and for the peers it
  touches (fan-out, NOOPs), is written once at the end of the batch.
* Admin commands are looked up in the server's one table (``admin.AdminCommands``);
  a reply that needs the store waits in the reply order like a durable submit.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

from gearshift.errors import RemoteProtocolError
from gearshift.protocol.admin import TooManyTokens, split_command
from gearshift.protocol.codec import AdminLine, Event, Packet, PacketReader
from gearshift.server.durable import BACKLOG_HIGH_WATER, ReplyOrder
from gearshift.server.model import Peer
from gearshift.server.scheduler import DropPeer

if TYPE_CHECKING:
    from gearshift.server.server import GearmanServer

logger = logging.getLogger(__name__)


#: The longest admin line, its terminator included (gearmand's buffer size).
ADMIN_LINE_LIMIT: Final = 8192
#: Packets larger than this that arrive in pieces get their payload received on its
#: own (``_PayloadReceiver``) rather than joined in the reader's buffer.  Only payload types can
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
        "reader",
        "order",
        "paused_for_write",
        "paused_for_backlog",
        "last_active",
        "port",
        "big",
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
        #: The large payload still arriving, on the copying path (``direct`` False).
        self.big: _PayloadReceiver | None = None
        self.track_idle = server.config.idle_timeout is not None
        tables = server.tables
        reader = self.reader = PacketReader(
            server.config.max_packet_size, max_line=ADMIN_LINE_LIMIT - 1
        )
        reader.dispatch_to(
            self,
            tables.requests,
            tables.responses,
            self._admin_line,
            counts=self.sched.stats.packets,
            on_large=self._large,
            big_packet=_BIG_PACKET,
        )
        self.order = ReplyOrder(self, server.persistent)
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
        self.order.clear()
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
        # The hot path: the reader runs each packet's handler as it finds it.
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
        try:
            self.reader.feed(data)
        except (RemoteProtocolError, DropPeer) as exc:
            self.close(str(exc))
        order = self.order
        if order.blocked and len(order.backlog) + len(order.fifo) > BACKLOG_HIGH_WATER:
            if not self.paused_for_backlog:
                self.paused_for_backlog = True
                self._update_reading()
        sched = self.sched
        if sched.dirty:
            sched.flush()

    def _large(
        self, ptype: int, request: bool, heads: list[bytes], first: memoryview, size: int
    ) -> None:
        """Receive the payload of a large packet on its own (the reader's ``on_large``)."""
        receiver = _PayloadReceiver(self, ptype, request, heads, first, size)
        transport = self.transport
        if self.direct and transport is not None:
            transport.set_protocol(receiver)
        else:
            self.big = receiver

    def run_packet(self, ptype: int, request: bool, args: list[bytes]) -> None:
        """Run one packet that arrived on its own (a large one)."""
        self.sched.stats.packets[ptype] += 1
        if not self.closed:
            self._run(ptype, request, args)

    def _run(self, ptype: int, request: bool, args: list[bytes]) -> bool:
        """Run one packet outside the reader (which inlines this); False if the peer
        was dropped for it."""
        reader = self.reader
        table = reader.requests if request else reader.responses
        assert table is not None
        try:
            table[ptype](self, args)
        except DropPeer as exc:
            self.close(str(exc))
            return False
        return True

    def _admin_line(self, line: AdminLine) -> None:
        if self.order.blocked:
            self.order.hold(line)
        else:
            self._admin(line)

    def _admin(self, line: bytes) -> bool:
        try:
            tokens = split_command(line)
        except TooManyTokens as exc:
            self.close(f"admin command: {exc}")
            return False
        server = self.server
        reply = server.admin.run(server, self, tokens)
        if isinstance(reply, bytes):
            self.sched.send(self, reply)
        else:
            # Answered when the store has; later messages wait behind it.
            self.order.later(reply)
        return True

    # ------------------------------------------------------------------ reply order

    def hold_reading(self, held: bool) -> None:
        """Hold every message back (True) while replies wait for the store, or not."""
        tables = self.server.tables
        reader = self.reader
        if held:
            reader.requests = tables.held_requests
            reader.responses = tables.held_responses
        else:
            reader.requests = tables.requests
            reader.responses = tables.responses

    def rerun(self, event: Event) -> bool:
        """Run a message that waited behind the store; False if the peer was dropped."""
        if type(event) is Packet:
            ptype, args, request = event
            return self._run(ptype, request, list(args))
        return self._admin(cast(AdminLine, event))

    def caught_up(self) -> None:
        if self.paused_for_backlog:
            self.paused_for_backlog = False
            self._update_reading()
