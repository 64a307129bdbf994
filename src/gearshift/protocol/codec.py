"""Sans-IO encoding and incremental decoding of Gearman packets and admin lines.

Everyone reads the wire with one reader, ``PacketReader``, and writes it with the
encoders here: the server's connections, ``Decoder`` (clients, workers, the HTTP
gateway, the load generator), and the ERROR packets of ``ERRORS``.

How it works: ``Decoder.feed(data)`` returns every complete message that ``data``
finishes, in order; ``PacketReader.feed(data)`` hands each one to its owner's handler
instead, as it is found.  A message starting with a NUL byte is a binary packet (12-byte
header, then the body); anything else is an admin text line ending in ``\\n`` (one
trailing ``\\r`` stripped).  Text and binary may alternate on one connection, as
gearmand allows.  Messages are sliced straight out of ``data``; only an unfinished
one is kept, in a ``bytearray``, and it is not parsed again until the bytes its header
announced have arrived (or, for an admin line, a newline).  Bodies are split on NUL at
most ``argc - 1`` times so the last argument may contain NULs.

The per-type limits of ``packets`` apply as soon as a header is read: a type without a
payload may not announce more than ``ARG_LIMIT`` bytes, and the arguments before a
payload must each end within ``ARG_LIMIT`` bytes, checked as they arrive; a packet
breaking either is refused (``PacketTooLarge``) without waiting for the rest of it.

Errors are raised as ``RemoteProtocolError`` subclasses; after one the reader is
unusable and the caller should close the connection.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from struct import Struct
from typing import Any, Final, NamedTuple

from gearshift.errors import (
    AdminLineTooLong,
    InvalidMagic,
    MalformedPacket,
    PacketTooLarge,
    UnknownPacketType,
)
from gearshift.protocol.packets import (
    ARG_LIMIT,
    ARGC,
    DEFAULT_MAX_PACKET_SIZE,
    HEADER_SIZE,
    MAX_PACKET_LIMIT,
    MAX_PACKET_TYPE,
    REQ,
    RES,
    PacketType,
    leading_args,
)

_HEADER: Final = Struct(">4sII")
#: ``pack_header(magic, type, body_length)``: the 12-byte header.  Public so that the
#: scheduler's per-job encodings, inlined for speed, build headers with this one.
pack_header: Final = _HEADER.pack
_pack_header = pack_header
_unpack_header = _HEADER.unpack_from

DEFAULT_MAX_LINE: Final = 65536


class Packet(NamedTuple):
    """One decoded binary packet.  ``type`` is the raw number (compare with PacketType)."""

    type: int
    args: tuple[bytes, ...]
    #: True for ``\\0REQ`` (sent to a server), False for ``\\0RES``.
    request: bool = True


#: ``tuple.__new__`` skips the Python-level ``__new__`` that namedtuple generates.
_new_packet = tuple.__new__


class AdminLine(bytes):
    """One admin text line, without its ``\\r\\n`` / ``\\n`` terminator."""

    __slots__ = ()


Event = Packet | AdminLine


#: From this payload size up a packet is built with one copy, not two (join, then add),
#: and ``response_parts`` keeps the payload as a piece of its own (never copied).
LARGE_PAYLOAD: Final = 64 * 1024
_ONE_COPY = LARGE_PAYLOAD


def encode(ptype: int, *args: bytes, magic: bytes = REQ) -> bytes:
    """Encode one packet.  Arguments are joined with NUL; the caller owns their count."""
    if args and len(args[-1]) >= _ONE_COPY:
        return _encode_large(magic, ptype, args)
    body = b"\0".join(args)
    return _pack_header(magic, ptype, len(body)) + body


def encode_request(ptype: int, *args: bytes) -> bytes:
    """Encode a ``\\0REQ`` packet (client or worker to server)."""
    if args and len(args[-1]) >= _ONE_COPY:
        return _encode_large(REQ, ptype, args)
    body = b"\0".join(args)
    return _pack_header(REQ, ptype, len(body)) + body


def encode_response(ptype: int, *args: bytes) -> bytes:
    """Encode a ``\\0RES`` packet (server to client or worker)."""
    if args and len(args[-1]) >= _ONE_COPY:
        return _encode_large(RES, ptype, args)
    body = b"\0".join(args)
    return _pack_header(RES, ptype, len(body)) + body


def _encode_large(magic: bytes, ptype: int, args: tuple[bytes, ...]) -> bytes:
    """A packet with a large last argument, copied once: header, args and NULs joined."""
    size = sum(map(len, args)) + len(args) - 1
    head = b"\0".join(args[:-1]) + b"\0" if len(args) > 1 else b""
    return b"".join((_pack_header(magic, ptype, size), head, args[-1]))


def encode_header(ptype: int, body_length: int, magic: bytes = RES) -> bytes:
    """Just the 12-byte header, for writing a large body without joining it."""
    return _pack_header(magic, ptype, body_length)


def response_parts(ptype: int, *args: bytes) -> list[bytes]:
    """A ``\\0RES`` packet as the pieces to queue for a peer: one piece, or, when its
    last argument is ``LARGE_PAYLOAD`` or more, the header and leading arguments, then
    the payload itself (so a large result is handed to the transport uncopied)."""
    data = args[-1]
    if len(data) < LARGE_PAYLOAD:
        body = b"\0".join(args)
        return [_pack_header(RES, ptype, len(body)) + body]
    head = b"\0".join(args[:-1]) + b"\0" if len(args) > 1 else b""
    return [_pack_header(RES, ptype, len(head) + len(data)) + head, data]


def encode_error(code: bytes, text: bytes) -> bytes:
    """An ERROR packet as gearmand sends it."""
    return encode_response(PacketType.ERROR, code, text)


#: Every ERROR packet the server sends with a fixed text: name -> (code, text), as
#: gearmand words them where gearmand has them.  ``ERRORS`` holds them encoded.
ERROR_TEXTS: Final[dict[str, tuple[bytes, bytes]]] = {
    "NOT_EXPECTED": (b"INVALID_COMMAND", b"Command not expected"),
    "MAGIC": (b"INVALID_MAGIC", b"Request magic expected"),
    "UNIQUE_TOO_LARGE": (b"ARGUMENT_TOO_LARGE", b"Unique value too large"),
    "HANDLE_TOO_LARGE": (
        b"ARGUMENT_TOO_LARGE",
        b"Error occurred due to GEARMAND_JOB_HANDLE_SIZE being too small from snprintf",
    ),
    "QUEUE_FULL": (b"QUEUE_ERROR", b"Job queue is full"),
    "UNKNOWN_OPTION": (b"UNKNOWN_OPTION", b"Server does not recognize given option"),
    "NOT_FOUND_DATA": (b"JOB_NOT_FOUND", b"Job does not exist on server"),
    "NOT_FOUND_RESULT": (b"JOB_NOT_FOUND", b"Job given in work result not found"),
    "NOT_FOUND_EXCEPTION": (
        b"JOB_NOT_FOUND",
        b"An exception was received for a job that does not exist",
    ),
    # gearmand's strtoll sets ERANGE and drops the connection; gearshift refuses that
    # job alone.
    "BAD_EPOCH": (b"INVALID_ARGUMENTS", b"Epoch time out of range"),
    # Nothing was queued, so a client may take the job to another server.
    "DRAINING": (
        b"SHUTDOWN_GRACEFUL",
        b"Server is shutting down: submit the job to another server",
    ),
    "PERMISSION_DENIED": (b"PERMISSION_DENIED", b"Not authorised for this function"),
}

#: ``ERROR_TEXTS`` encoded once: name -> the ERROR packet.
ERRORS: Final[dict[str, bytes]] = {
    name: encode_error(code, text) for name, (code, text) in ERROR_TEXTS.items()
}


def queue_error(reason: bytes) -> bytes:
    """The ERROR packet for a store that failed to take a job (its reason as text)."""
    return encode_error(b"QUEUE_ERROR", reason or b"QUEUE_ERROR")


def encode_admin(line: str | bytes) -> bytes:
    """An admin command line, terminated with ``\\r\\n`` as gearadmin does."""
    raw = line.encode() if isinstance(line, str) else line
    return raw + b"\r\n"


#: A handler of the packets of one type: ``handler(owner, args)``.
Handler = Callable[[Any, list[bytes]], object]


class PacketReader:
    """The one reader of a Gearman byte stream: every limit and error is here.

    ``feed(data)`` finds each complete message in ``data`` (and in the unfinished tail
    it keeps from the previous call) and, as it finds it, either hands it over or
    collects it:

    * collecting (``requests`` is None, as ``Decoder`` uses it): ``Packet`` and
      ``AdminLine`` objects are appended to ``out``;
    * dispatching (as the server uses it): a packet runs
      ``requests[type](owner, args)`` (``responses`` for a ``\\0RES`` packet) and an
      admin line ``on_admin(line)``, straight from the bytes: no Packet object, no
      list of events, no copy of the buffer per packet.  Reading stops as soon as
      ``owner.closed`` is true.  The tables are read per packet, so a handler may swap
      them (a connection that must hold its requests back does).

    A packet whose body is larger than ``big_packet`` and whose leading arguments have
    arrived is handed to ``on_large(type, request, leading_args, payload_start, size)``
    when set, so that its owner receives the payload on its own; otherwise it waits in
    the reader's buffer like any unfinished message.

    Args:
        max_packet_size: the largest body accepted.
        max_line: the longest admin line accepted, without its terminator.
        allow_admin: a message starting with a non-NUL byte is an admin line (a server
            reads them; a client reading replies does not).

    Raises (from ``feed``): ``RemoteProtocolError`` subclasses; the reader is unusable
    afterwards.  Whatever a handler raises propagates too.
    """

    __slots__ = (
        "buf",
        "need",
        "max_packet_size",
        "plain_limit",
        "line_limit",
        "allow_admin",
        "out",
        "collect",
        "owner",
        "requests",
        "responses",
        "counts",
        "on_admin",
        "on_large",
        "big_packet",
    )

    def __init__(
        self,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        *,
        max_line: int = DEFAULT_MAX_LINE,
        allow_admin: bool = True,
    ) -> None:
        if not 0 < max_packet_size <= MAX_PACKET_LIMIT:
            raise ValueError(f"max_packet_size must be 1..{MAX_PACKET_LIMIT}")
        #: The start of an unfinished message, kept between calls.
        self.buf = bytearray()
        #: Bytes the buffered message needs before parsing is worth trying;
        #: 0 for an unfinished admin line (parse again once a newline arrives).
        self.need = 0
        self.max_packet_size = max_packet_size
        #: Bodies up to this size need no closer look: no type's limit is below it.
        #: One compare per packet against it keeps every size check off the hot path.
        self.plain_limit = min(ARG_LIMIT, max_packet_size)
        #: The longest admin line with its ``\\n``.
        self.line_limit = max_line + 1
        self.allow_admin = allow_admin
        self.out: list[Event] = []
        #: ``out`` while collecting, None while dispatching.
        self.collect: list[Event] | None = self.out
        self.owner: Any = None
        self.requests: Sequence[Handler] | None = None
        self.responses: Sequence[Handler] = ()
        #: Messages read per packet type (0: admin lines), when dispatching.
        self.counts: list[int] = [0] * (MAX_PACKET_TYPE + 1)
        self.on_admin: Callable[[AdminLine], object] | None = None
        self.on_large: Callable[[int, bool, list[bytes], memoryview, int], object] | None = None
        self.big_packet = MAX_PACKET_LIMIT

    def dispatch_to(
        self,
        owner: Any,
        requests: Sequence[Handler],
        responses: Sequence[Handler],
        on_admin: Callable[[AdminLine], object],
        *,
        counts: list[int] | None = None,
        on_large: Callable[[int, bool, list[bytes], memoryview, int], object] | None = None,
        big_packet: int = MAX_PACKET_LIMIT,
    ) -> None:
        """Hand messages to ``owner``'s handlers instead of collecting them."""
        self.owner = owner
        self.collect = None
        self.requests = requests
        self.responses = responses
        self.on_admin = on_admin
        if counts is not None:
            self.counts = counts
        self.on_large = on_large
        self.big_packet = big_packet

    @property
    def buffered(self) -> int:
        """Bytes received but not yet read as messages."""
        return len(self.buf)

    def feed(self, data: bytes) -> None:
        """Read ``data``: hand over (or collect) every message it completes, in order."""
        # Speed: in the common case (nothing buffered) messages are sliced straight
        # out of ``data``; only an unfinished tail is copied into the buffer, and a
        # body arriving in pieces is not looked at again until it is complete.
        buf = self.buf
        if buf:
            buf += data
            need = self.need
            if len(buf) < need:
                return
            if not need and b"\n" not in data and len(buf) < self.line_limit:
                # Still inside an admin line (the parse below refuses one too long).
                return
            full = HEADER_SIZE + _unpack_header(buf, 0)[2] if need > HEADER_SIZE else 0
            if full > self.plain_limit + HEADER_SIZE and len(buf) >= full:
                # A large packet is complete in the buffer: its payload is copied out
                # once, not joined into a bytes object and then sliced (two copies of
                # every large payload; fresh pages make each copy dear).
                data = self._large_from_buffer(buf, full)
                if not data or (self.collect is None and self.owner.closed):
                    return
            else:
                data = bytes(buf)
                buf.clear()
        collect = self.collect
        owner = self.owner
        counts = self.counts
        plain_limit = self.plain_limit
        pos = 0
        end = len(data)
        while pos < end:
            if data[pos]:
                pos = self._line(data, pos, end)
                if pos < 0:
                    return
                continue
            if end - pos < HEADER_SIZE:
                if end - pos >= 4 and data[pos : pos + 4] not in (REQ, RES):
                    raise InvalidMagic(f"bad magic {data[pos : pos + 4]!r}")
                buf += memoryview(data)[pos:]
                self.need = HEADER_SIZE
                return
            magic, ptype, size = _unpack_header(data, pos)
            if magic != REQ and magic != RES:
                raise InvalidMagic(f"bad magic {magic!r}")
            if not 0 < ptype <= MAX_PACKET_TYPE:
                raise UnknownPacketType(f"unknown packet type {ptype}")
            start = pos + HEADER_SIZE
            stop = start + size
            if size > plain_limit:
                # Rare: only a body this large can break the configured maximum or its
                # type's limits (``leading_args`` raises if it does).
                if size > self.max_packet_size:
                    raise PacketTooLarge(
                        f"packet type {ptype} body of {size} bytes exceeds {self.max_packet_size}"
                    )
                split = leading_args(data, ptype, size, start, stop if stop < end else end)
                if stop > end:
                    self._partial_large(data, pos, end, stop, ptype, magic == REQ, split)
                    return
                if split is not None:
                    # Complete, its leading arguments found: the payload is sliced out
                    # once (a split of the body would copy it twice).
                    heads, at = split
                    pos = stop
                    heads.append(data[at:stop])
                    if collect is not None:
                        collect.append(_new_packet(Packet, (ptype, tuple(heads), magic == REQ)))
                        continue
                    counts[ptype] += 1
                    (self.requests if magic == REQ else self.responses)[ptype](owner, heads)  # type: ignore[index]
                    if owner.closed:
                        return
                    continue
            elif stop > end:
                buf += memoryview(data)[pos:]
                self.need = stop - pos
                return
            argc = ARGC[ptype]
            if argc == 0:
                args: list[bytes] = []
            elif argc == 1:
                args = [data[start:stop]]
            else:
                args = data[start:stop].split(b"\0", argc - 1)
                if len(args) != argc:
                    raise MalformedPacket(
                        f"{PacketType(ptype).name} needs {argc} arguments, got {len(args)}"
                    )
            pos = stop
            if collect is not None:
                collect.append(_new_packet(Packet, (ptype, tuple(args), magic == REQ)))
                continue
            counts[ptype] += 1
            (self.requests if magic == REQ else self.responses)[ptype](owner, args)  # type: ignore[index]
            if owner.closed:
                return

    def _large_from_buffer(self, buf: bytearray, stop: int) -> bytes:
        """Deliver the large packet that fills ``buf[:stop]``; return what follows it."""
        magic, ptype, size = _unpack_header(buf, 0)
        split = leading_args(buf, ptype, size, HEADER_SIZE, stop)
        if split is None:
            argc = ARGC[ptype]
            raise MalformedPacket(f"{PacketType(ptype).name} needs {argc} arguments")
        heads, at = split
        with memoryview(buf) as view:
            heads.append(bytes(view[at:stop]))
            rest = bytes(view[stop:])
        buf.clear()
        collect = self.collect
        if collect is not None:
            collect.append(_new_packet(Packet, (ptype, tuple(heads), magic == REQ)))
        else:
            self.counts[ptype] += 1
            (self.requests if magic == REQ else self.responses)[ptype](self.owner, heads)  # type: ignore[index]
        return rest

    def _line(self, data: bytes, pos: int, end: int) -> int:
        """The admin line at ``pos``: where the next message starts, or -1 to stop."""
        if not self.allow_admin:
            raise InvalidMagic(f"expected a binary packet, got {data[pos : pos + 4]!r}")
        limit = self.line_limit
        nl = data.find(b"\n", pos, pos + limit)
        if nl < 0:
            if end - pos >= limit:
                # gearmand reads admin lines into an 8 KiB buffer and drops the
                # connection when one does not fit.
                raise AdminLineTooLong(f"admin line longer than {limit - 1} bytes")
            self.buf += memoryview(data)[pos:]
            self.need = 0
            return -1
        stop = nl - 1 if nl > pos and data[nl - 1] == 13 else nl
        line = AdminLine(data[pos:stop])
        collect = self.collect
        if collect is not None:
            collect.append(line)
            return nl + 1
        self.counts[0] += 1
        self.on_admin(line)  # type: ignore[misc]
        return -1 if self.owner.closed else nl + 1

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
        next byte, so one too long is refused then).  A payload larger than
        ``big_packet`` whose arguments are known goes to ``on_large``; a smaller packet
        waits in the buffer.
        """
        on_large = self.on_large
        if split is None or stop - pos <= self.big_packet or on_large is None:
            self.buf += memoryview(data)[pos:end]
            self.need = end - pos + 1 if split is None else stop - pos
            return
        heads, at = split
        on_large(ptype, request, heads, memoryview(data)[at:end], stop - at)


class Decoder:
    """Incremental decoder for one direction of one connection: a collecting
    ``PacketReader``.

    Args:
        max_packet_size: the largest body accepted (default 1 GiB, at most 4 GiB - 1);
            whatever it is, types without a payload are held to ``packets.ARG_LIMIT``.
        max_line: the longest admin text line accepted.
        allow_admin: treat a message starting with a non-NUL byte as an admin line
            (a server does; a client reading a binary reply stream does not).
    """

    __slots__ = ("_reader",)

    def __init__(
        self,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        *,
        max_line: int = DEFAULT_MAX_LINE,
        allow_admin: bool = True,
    ) -> None:
        self._reader = PacketReader(max_packet_size, max_line=max_line, allow_admin=allow_admin)

    @property
    def max_packet_size(self) -> int:
        return self._reader.max_packet_size

    @property
    def max_line(self) -> int:
        return self._reader.line_limit - 1

    @property
    def allow_admin(self) -> bool:
        return self._reader.allow_admin

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as messages."""
        return len(self._reader.buf)

    def feed(self, data: bytes) -> list[Event]:
        """Add received bytes; return the complete messages they finish, in order.

        Raises:
            RemoteProtocolError: a subclass naming what was wrong with the input.
        """
        reader = self._reader
        reader.feed(data if type(data) is bytes else bytes(data))
        out = reader.out
        if not out:
            return []
        reader.out = reader.collect = []
        return out
