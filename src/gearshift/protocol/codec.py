"""Sans-IO encoding and incremental decoding of Gearman packets and admin lines.

How it works: ``Decoder.feed(data)`` appends to one ``bytearray`` and returns every
complete message it now holds, in order.  A message starting with a NUL byte is a
binary packet (12-byte header, then the body); anything else is an admin text line
ending in ``\\n`` (one trailing ``\\r`` stripped).  Text and binary may alternate on
one connection, as gearmand allows.  Arguments are sliced straight out of the buffer
(one copy each, even for a large payload), splitting the body on NUL at most
``argc - 1`` times so the last argument may contain NULs.

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
    ARGC,
    DEFAULT_MAX_PACKET_SIZE,
    HEADER_SIZE,
    MAX_PACKET_LIMIT,
    MAX_PACKET_TYPE,
    REQ,
    RES,
    PacketType,
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


class AdminLine(bytes):
    """One admin text line, without its ``\\r\\n`` / ``\\n`` terminator."""

    __slots__ = ()


Event = Packet | AdminLine


def encode(ptype: int, *args: bytes, magic: bytes = REQ) -> bytes:
    """Encode one packet.  Arguments are joined with NUL; the caller owns their count."""
    body = b"\0".join(args)
    return _pack_header(magic, ptype, len(body)) + body


def encode_request(ptype: int, *args: bytes) -> bytes:
    """Encode a ``\\0REQ`` packet (client or worker to server)."""
    body = b"\0".join(args)
    return _pack_header(REQ, ptype, len(body)) + body


def encode_response(ptype: int, *args: bytes) -> bytes:
    """Encode a ``\\0RES`` packet (server to client or worker)."""
    body = b"\0".join(args)
    return _pack_header(RES, ptype, len(body)) + body


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
        max_packet_size: the largest body accepted (default 1 GiB, at most 4 GiB - 1).
        max_line: the longest admin text line accepted.
        allow_admin: treat a message starting with a non-NUL byte as an admin line
            (a server does; a client reading a binary reply stream does not).
    """

    __slots__ = ("_buf", "_pos", "max_packet_size", "max_line", "allow_admin")

    def __init__(
        self,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        *,
        max_line: int = DEFAULT_MAX_LINE,
        allow_admin: bool = True,
    ) -> None:
        if not 0 < max_packet_size <= MAX_PACKET_LIMIT:
            raise ValueError(f"max_packet_size must be 1..{MAX_PACKET_LIMIT}")
        self._buf = bytearray()
        self._pos = 0
        self.max_packet_size = max_packet_size
        self.max_line = max_line
        self.allow_admin = allow_admin

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as messages."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> list[Event]:
        """Add received bytes; return the complete messages they finish, in order.

        Raises:
            RemoteProtocolError: a subclass naming what was wrong with the input.
        """
        buf = self._buf
        if self._pos >= len(buf):
            buf.clear()
            self._pos = 0
        buf += data
        out: list[Event] = []
        pos = self._pos
        end = len(buf)
        view = memoryview(buf)
        try:
            while pos < end:
                if buf[pos]:
                    if not self.allow_admin:
                        raise InvalidMagic(
                            f"expected a binary packet, got {bytes(buf[pos : pos + 4])!r}"
                        )
                    nl = buf.find(b"\n", pos)
                    if nl < 0:
                        if end - pos > self.max_line:
                            raise AdminLineTooLong(f"admin line longer than {self.max_line} bytes")
                        break
                    stop = nl - 1 if nl > pos and buf[nl - 1] == 13 else nl
                    out.append(AdminLine(view[pos:stop]))
                    pos = nl + 1
                    continue
                if end - pos < HEADER_SIZE:
                    if end - pos >= 4 and bytes(buf[pos : pos + 4]) not in (REQ, RES):
                        raise InvalidMagic(f"bad magic {bytes(buf[pos : pos + 4])!r}")
                    break
                magic, ptype, size = _unpack_header(buf, pos)
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
                if stop > end:
                    break
                argc = ARGC[ptype]
                if argc == 0:
                    args: tuple[bytes, ...] = ()
                elif argc == 1:
                    args = (bytes(view[start:stop]),)
                else:
                    parts: list[bytes] = []
                    at = start
                    for _ in range(argc - 1):
                        nul = buf.find(b"\0", at, stop)
                        if nul < 0:
                            raise MalformedPacket(
                                f"{PacketType(ptype).name} needs {argc} arguments, "
                                f"got {len(parts) + 1}"
                            )
                        parts.append(bytes(view[at:nul]))
                        at = nul + 1
                    parts.append(bytes(view[at:stop]))
                    args = tuple(parts)
                out.append(Packet(ptype, args, magic == REQ))
                pos = stop
        finally:
            view.release()
            if pos >= end:
                buf.clear()
                pos = 0
            elif pos > 65536:
                del buf[:pos]
                pos = 0
            self._pos = pos
        return out
