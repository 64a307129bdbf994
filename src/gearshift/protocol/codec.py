"""Sans-IO encoding and incremental decoding of Gearman packets and admin lines.

How it works: ``Decoder.feed(data)`` returns every complete message that ``data``
finishes, in order.  A message starting with a NUL byte is a binary packet (12-byte
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

Errors are raised as ``RemoteProtocolError`` subclasses; after one the decoder is
unusable and the caller should close the connection.
"""

from __future__ import annotations

from struct import Struct
from typing import Final, NamedTuple

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
_pack_header = _HEADER.pack
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


#: From this payload size up a packet is built with one copy, not two (join, then add).
_ONE_COPY = 64 * 1024


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


def encode_error(code: bytes, text: bytes) -> bytes:
    """An ERROR packet as gearmand sends it."""
    return encode_response(PacketType.ERROR, code, text)


def encode_admin(line: str | bytes) -> bytes:
    """An admin command line, terminated with ``\\r\\n`` as gearadmin does."""
    raw = line.encode() if isinstance(line, str) else line
    return raw + b"\r\n"


class Decoder:
    """Incremental decoder for one direction of one connection.

    Args:
        max_packet_size: the largest body accepted (default 1 GiB, at most 4 GiB - 1);
            whatever it is, types without a payload are held to ``packets.ARG_LIMIT``.
        max_line: the longest admin text line accepted.
        allow_admin: treat a message starting with a non-NUL byte as an admin line
            (a server does; a client reading a binary reply stream does not).
    """

    __slots__ = ("_buf", "_need", "max_packet_size", "max_line", "allow_admin")

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
        self._buf = bytearray()
        #: Bytes the buffered message needs before parsing is worth trying;
        #: 0 for an unfinished admin line (parse again once a newline arrives).
        self._need = 0
        self.max_packet_size = max_packet_size
        self.max_line = max_line
        self.allow_admin = allow_admin

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as messages."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Event]:
        """Add received bytes; return the complete messages they finish, in order.

        Raises:
            RemoteProtocolError: a subclass naming what was wrong with the input.
        """
        # Speed: in the common case (nothing buffered) messages are sliced straight
        # out of ``data``; only an unfinished tail is copied into the buffer, and a
        # large body arriving in pieces is not looked at until it is complete.
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < self._need:
                return []
            if not self._need and b"\n" not in data and len(buf) <= self.max_line:
                # Still inside an admin line (the parse below raises if it grew too long).
                return []
            src = bytes(buf)
            buf.clear()
        else:
            src = bytes(data)
        out: list[Event] = []
        pos = 0
        end = len(src)
        while pos < end:
            if src[pos]:
                if not self.allow_admin:
                    raise InvalidMagic(f"expected a binary packet, got {src[pos : pos + 4]!r}")
                nl = src.find(b"\n", pos)
                if nl < 0:
                    if end - pos > self.max_line:
                        raise AdminLineTooLong(f"admin line longer than {self.max_line} bytes")
                    self._need = 0
                    break
                stop = nl - 1 if nl > pos and src[nl - 1] == 13 else nl
                out.append(AdminLine(src[pos:stop]))
                pos = nl + 1
                continue
            if end - pos < HEADER_SIZE:
                if end - pos >= 4 and src[pos : pos + 4] not in (REQ, RES):
                    raise InvalidMagic(f"bad magic {src[pos : pos + 4]!r}")
                self._need = HEADER_SIZE
                break
            magic, ptype, size = _unpack_header(src, pos)
            if magic != REQ and magic != RES:
                raise InvalidMagic(f"bad magic {magic!r}")
            if not 0 < ptype <= MAX_PACKET_TYPE:
                raise UnknownPacketType(f"unknown packet type {ptype}")
            if size > self.max_packet_size:
                raise PacketTooLarge(
                    f"packet type {ptype} body of {size} bytes exceeds {self.max_packet_size}"
                )
            start = pos + HEADER_SIZE
            stop = start + size
            if size > ARG_LIMIT:
                # Only a body this large can break a type's limits (raises if it does).
                if leading_args(src, ptype, size, start, stop if stop < end else end) is None:
                    if stop > end:
                        # The arguments before the payload are still arriving: look
                        # again at the next byte, not only once the whole body is here.
                        self._need = end - pos + 1
                        break
            if stop > end:
                self._need = HEADER_SIZE + size
                break
            argc = ARGC[ptype]
            if argc == 1:
                args: tuple[bytes, ...] = (src[start:stop],)
            elif argc == 0:
                args = ()
            else:
                parts: list[bytes] = []
                at = start
                for _ in range(argc - 1):
                    nul = src.find(b"\0", at, stop)
                    if nul < 0:
                        raise MalformedPacket(
                            f"{PacketType(ptype).name} needs {argc} arguments, got {len(parts) + 1}"
                        )
                    parts.append(src[at:nul])
                    at = nul + 1
                parts.append(src[at:stop])
                args = tuple(parts)
            out.append(_new_packet(Packet, (ptype, args, magic == REQ)))
            pos = stop
        if pos < end:
            buf += memoryview(src)[pos:] if pos else src
        return out
