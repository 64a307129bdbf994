"""Scripted raw-protocol conversations, played against a real server and recorded.

How it works: a :class:`Conversation` is data, a list of steps.  Each step names a
connection (opened on first use) and either sends bytes or says what to read back:
``Recv`` (exactly N binary packets), ``Sync`` (an ECHO_REQ barrier: everything the
server sent on that connection before the echo comes back), ``Admin`` (one admin
command and its whole reply), ``ExpectClose`` (read until the server closes) or
``Quiet`` (whatever arrives within a time window, normally nothing).

:func:`play` runs the steps in order and returns a transcript: one line per sent or
received message, rendered readably and normalised so that two servers can be
compared line by line.  Normalisation removes what legitimately varies between runs
and implementations: job handles become ``H:#n`` numbered by first appearance, pids,
file descriptors and version strings become placeholders, and the lines of list
replies (``status``, ``workers``, ``show jobs`` ...) are sorted because gearmand prints
them in hash-table order.

Because every read waits for a definite event (a packet count, an echo barrier, a
close), no step depends on timing except ``Quiet`` and ``Sleep``, which only the
timer conversations (CAN_DO_TIMEOUT, epoch jobs) use.
"""

from __future__ import annotations

import hashlib
import re
import socket
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from gearshift.errors import RemoteProtocolError
from gearshift.protocol import Decoder, Packet, PacketType, encode_request
from gearshift.protocol.packets import REQ, RES

#: How long one read waits before the transcript records TIMEOUT.  The machine is
#: shared and slow; a healthy server answers in milliseconds.
READ_TIMEOUT = 8.0
#: After one TIMEOUT, later reads of the same conversation wait only this long so a
#: broken server cannot make one test take minutes.
DEGRADED_TIMEOUT = 0.5

Payload = bytes | Callable[[], bytes]


# --------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class Send:
    """Write raw bytes (or bytes built at play time, e.g. an epoch) on ``conn``."""

    conn: str
    data: Payload


@dataclass(frozen=True)
class Recv:
    """Read exactly ``count`` binary packets from ``conn``."""

    conn: str
    count: int = 1
    timeout: float = READ_TIMEOUT


@dataclass(frozen=True)
class Sync:
    """Send an ECHO_REQ barrier on ``conn`` and record everything received before its echo.

    The server handles one connection's packets in order, so anything an earlier
    packet provoked on this connection arrives before the barrier's ECHO_RES.
    """

    conn: str


@dataclass(frozen=True)
class Admin:
    """Send one admin line (``line`` is sent as is; add the terminator) and read its reply."""

    conn: str
    line: bytes


@dataclass(frozen=True)
class ExpectClose:
    """Read until the server closes ``conn``; record what came first, then CLOSED."""

    conn: str
    timeout: float = READ_TIMEOUT


@dataclass(frozen=True)
class Quiet:
    """Record whatever arrives on ``conn`` within ``seconds`` (normally nothing)."""

    conn: str
    seconds: float


@dataclass(frozen=True)
class Close:
    """Close our side of ``conn`` (a client or worker going away)."""

    conn: str


@dataclass(frozen=True)
class Leave:
    """Close ``conn`` and wait until the server has noticed, so later steps do not race it.

    The connection first names itself with SET_CLIENT_ID (behind an unrecorded echo
    barrier); after closing, a private connection polls ``workers`` until that name is
    gone.  The poller stays open for the rest of the conversation and so shows up in
    later ``workers`` listings as ``~poller`` (on both servers alike).
    """

    conn: str


@dataclass(frozen=True)
class Sleep:
    """Let time pass on the server (timers: CAN_DO_TIMEOUT, epoch jobs)."""

    seconds: float


Step = Send | Recv | Sync | Admin | ExpectClose | Quiet | Close | Leave | Sleep


@dataclass(frozen=True)
class Conversation:
    """One scripted exchange.  ``server_args`` are passed to both servers."""

    name: str
    steps: tuple[Step, ...]
    server_args: tuple[str, ...] = ()
    #: What the conversation shows (printed by ``python -m tests.interop.show``).
    doc: str = ""


# --------------------------------------------------------------------------- builders


def req(ptype: int, *args: bytes) -> bytes:
    """A ``\\0REQ`` packet (the codec's encoder; ``ptype`` may be any number)."""
    return encode_request(ptype, *args)


def raw(magic: bytes, ptype: int, body: bytes) -> bytes:
    """A packet with any magic, type and body, for framing errors."""
    return struct.pack(">4sII", magic, ptype, len(body)) + body


def admin(line: str) -> bytes:
    """An admin line with gearadmin's ``\\r\\n`` terminator."""
    return line.encode() + b"\r\n"


# --------------------------------------------------------------------------- rendering

_HANDLE = re.compile(rb"H:[A-Za-z0-9._\-]+:\d+")
# Epoch timestamps we send (SUBMIT_JOB_EPOCH built at play time) change every run.
_EPOCH = re.compile(rb"\A1[6-9]\d{8}\Z")
_PRINTABLE = re.compile(rb"[\x20-\x7e\t]*\r?\n?")


class _Normaliser:
    """Renames job handles to ``H:#n`` in order of first appearance."""

    def __init__(self) -> None:
        self.handles: dict[bytes, bytes] = {}

    def handle(self, m: re.Match[bytes]) -> bytes:
        h = m.group(0)
        if h not in self.handles:
            self.handles[h] = b"H:#%d" % (len(self.handles) + 1)
        return self.handles[h]

    def __call__(self, data: bytes) -> bytes:
        return _HANDLE.sub(self.handle, data)


def _show(data: bytes) -> str:
    if len(data) > 120:
        digest = hashlib.sha1(data).hexdigest()[:12]
        return f"<{len(data)} bytes {data[:16]!r}... sha1={digest}>"
    return repr(data)


def _packet_name(ptype: int) -> str:
    try:
        return PacketType(ptype).name
    except ValueError:
        return f"TYPE{ptype}"


def render_sent(data: bytes, norm: _Normaliser) -> list[str]:
    """Describe bytes we send: each whole packet or admin line, else the raw bytes."""
    out: list[str] = []
    pos = 0
    while pos < len(data):
        if data[pos] == 0 and len(data) - pos >= 12:
            magic, ptype, size = struct.unpack_from(">4sII", data, pos)
            body = data[pos + 12 : pos + 12 + size]
            if magic in (REQ, RES) and 0 < ptype <= 42 and len(body) == size:
                try:
                    (packet,) = Decoder(allow_admin=False).feed(data[pos : pos + 12 + size])
                except RemoteProtocolError:
                    packet = None
                if isinstance(packet, Packet):
                    tag = "" if magic == REQ else "RES:"
                    args = ", ".join(_show(_EPOCH.sub(b"<epoch>", norm(p))) for p in packet.args)
                    out.append(f"{tag}{_packet_name(ptype)}({args})")
                    pos += 12 + size
                    continue
            out.append(f"RAW {_show(data[pos:])}")
            break
        nl = data.find(b"\n", pos)
        stop = len(data) if nl < 0 else nl + 1
        if data[pos] != 0 and _PRINTABLE.fullmatch(data[pos:stop]):
            out.append(f"TEXT {_show(norm(data[pos:stop]))}")
            pos = stop
            continue
        out.append(f"RAW {_show(data[pos:])}")
        break
    return out


# --------------------------------------------------------------------------- socket reader


class _Closed(Exception):
    pass


class _TimedOut(Exception):
    pass


class RawConnection:
    """A blocking socket with a receive buffer that yields packets or text lines."""

    def __init__(self, port: int) -> None:
        self.buf = bytearray()
        self.eof = False
        self.refused = False
        try:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT)
        except OSError:
            # Only a dead server refuses loopback connections; the transcript says so.
            self.sock = socket.socket()
            self.eof = self.refused = True
            return
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            # The server may already have closed us (that is what some steps test);
            # the next read reports CLOSED.
            self.eof = True

    def _fill(self, deadline: float) -> None:
        if self.eof:
            raise _Closed
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _TimedOut
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(1 << 20)
        except TimeoutError:
            raise _TimedOut from None
        except OSError:
            chunk = b""
        if not chunk:
            self.eof = True
            raise _Closed
        self.buf += chunk

    def read_packet_or_line(self, deadline: float) -> tuple[str, object]:
        """Next message: ("packet", Packet), ("text", line) or ("raw", bytes)."""
        while not self.buf:
            self._fill(deadline)
        if self.buf[0] != 0:
            while b"\n" not in self.buf:
                self._fill(deadline)
            nl = self.buf.index(b"\n")
            line = bytes(self.buf[: nl + 1])
            del self.buf[: nl + 1]
            return "text", line
        while len(self.buf) < 12:
            self._fill(deadline)
        magic, _ptype, size = struct.unpack_from(">4sII", self.buf)
        if magic not in (REQ, RES):
            data = bytes(self.buf)
            self.buf.clear()
            return "raw", data
        while len(self.buf) < 12 + size:
            self._fill(deadline)
        data = bytes(self.buf[: 12 + size])
        del self.buf[: 12 + size]
        packets = Decoder(allow_admin=False).feed(data)
        assert len(packets) == 1
        return "packet", packets[0]

    def read_line(self, deadline: float) -> bytes:
        while b"\n" not in self.buf:
            self._fill(deadline)
        nl = self.buf.index(b"\n")
        line = bytes(self.buf[: nl + 1])
        del self.buf[: nl + 1]
        return line

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------- player


_ADMIN_LIST_END = b".\n"


def _admin_command(line: bytes) -> list[bytes]:
    return line.strip().lower().split()


def _normalise_admin(cmd: list[bytes], lines: list[bytes], norm: _Normaliser) -> list[str]:
    out = [norm(x) for x in lines]
    head = cmd[0] if cmd else b""
    if len(out) == 1 and out[0].startswith(b"OK "):
        if head == b"getpid":
            out[0] = re.sub(rb"^OK \d+", b"OK <pid>", out[0])
        elif head == b"version":
            out[0] = re.sub(rb"^OK \S+", b"OK <version>", out[0])
    if head == b"workers":
        out = [re.sub(rb"^\d+ ", b"<fd> ", x) for x in out]
    if len(out) > 1 and out[-1] == _ADMIN_LIST_END:
        out = sorted(out[:-1]) + [out[-1]]
    return [_show(x) for x in out]


class Player:
    """Plays one conversation against ``port`` and collects the transcript."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conns: dict[str, RawConnection] = {}
        self.lines: list[str] = []
        self.norm = _Normaliser()
        self.degraded = False
        self.barrier = 0
        self.poller: RawConnection | None = None

    def conn(self, name: str) -> RawConnection:
        if name not in self.conns:
            self.conns[name] = c = RawConnection(self.port)
            if c.refused:
                self.lines.append(f"{name} <- CONNECTION REFUSED")
        return self.conns[name]

    def _deadline(self, timeout: float) -> float:
        return time.monotonic() + (min(timeout, DEGRADED_TIMEOUT) if self.degraded else timeout)

    def _record_message(self, name: str, kind: str, msg: object) -> None:
        if kind == "packet":
            assert isinstance(msg, Packet)
            tag = "" if not msg.request else "REQ:"
            args = ", ".join(_show(self.norm(a)) for a in msg.args)
            self.lines.append(f"{name} <- {tag}{_packet_name(msg.type)}({args})")
        else:
            assert isinstance(msg, bytes)
            self.lines.append(f"{name} <- {kind.upper()} {_show(self.norm(msg))}")

    def _timeout(self, name: str, what: str) -> None:
        self.lines.append(f"{name} <- TIMEOUT waiting for {what}")
        self.degraded = True

    def step(self, st: Step) -> None:
        if isinstance(st, Send):
            data = st.data() if callable(st.data) else st.data
            for d in render_sent(data, self.norm):
                self.lines.append(f"{st.conn} -> {d}")
            self.conn(st.conn).send(data)
        elif isinstance(st, Recv):
            c = self.conn(st.conn)
            deadline = self._deadline(st.timeout)
            for i in range(st.count):
                try:
                    kind, msg = c.read_packet_or_line(deadline)
                except _TimedOut:
                    self._timeout(st.conn, f"packet {i + 1} of {st.count}")
                    return
                except _Closed:
                    self.lines.append(f"{st.conn} <- CLOSED")
                    return
                self._record_message(st.conn, kind, msg)
        elif isinstance(st, Sync):
            self._sync(st.conn)
        elif isinstance(st, Admin):
            self._admin(st.conn, st.line)
        elif isinstance(st, ExpectClose):
            c = self.conn(st.conn)
            deadline = self._deadline(st.timeout)
            while True:
                try:
                    kind, msg = c.read_packet_or_line(deadline)
                except _TimedOut:
                    self.lines.append(f"{st.conn} <- STILL OPEN")
                    return
                except _Closed:
                    self.lines.append(f"{st.conn} <- CLOSED")
                    return
                self._record_message(st.conn, kind, msg)
        elif isinstance(st, Quiet):
            c = self.conn(st.conn)
            deadline = time.monotonic() + st.seconds
            while True:
                try:
                    kind, msg = c.read_packet_or_line(deadline)
                except _TimedOut:
                    return
                except _Closed:
                    self.lines.append(f"{st.conn} <- CLOSED")
                    return
                self._record_message(st.conn, kind, msg)
        elif isinstance(st, Close):
            self.lines.append(f"{st.conn} -> close")
            self.conn(st.conn).close()
        elif isinstance(st, Leave):
            self._leave(st.conn)
        else:
            time.sleep(st.seconds)

    def _sync(self, name: str) -> None:
        if self._barrier(self.conn(name), name):
            self.lines.append(f"{name} <- sync")

    def _barrier(self, c: RawConnection, name: str) -> bool:
        """Echo round trip on ``c``; anything else that arrives first is recorded."""
        self.barrier += 1
        marker = b"barrier-%d" % self.barrier
        c.send(encode_request(PacketType.ECHO_REQ, marker))
        deadline = self._deadline(READ_TIMEOUT)
        while True:
            try:
                kind, msg = c.read_packet_or_line(deadline)
            except _TimedOut:
                self._timeout(name, "sync")
                return False
            except _Closed:
                self.lines.append(f"{name} <- CLOSED")
                return False
            if kind == "packet" and isinstance(msg, Packet):
                if msg.type == PacketType.ECHO_RES and msg.args == (marker,):
                    return True
            self._record_message(name, kind, msg)

    def _leave(self, name: str) -> None:
        c = self.conn(name)
        ident = b"leaving-" + name.encode()
        c.send(encode_request(PacketType.SET_CLIENT_ID, ident))
        if not self._barrier(c, name):
            return
        self.lines.append(f"{name} -> close")
        c.close()
        if self.poller is None:
            self.poller = RawConnection(self.port)
            self.poller.send(encode_request(PacketType.SET_CLIENT_ID, b"~poller"))
            if not self._barrier(self.poller, "~poller"):
                return
        needle = b" " + ident + b" :"
        deadline = self._deadline(READ_TIMEOUT)
        while True:
            self.poller.send(b"workers\r\n")
            try:
                listing = [self.poller.read_line(deadline)]
                while listing[-1] != _ADMIN_LIST_END:
                    listing.append(self.poller.read_line(deadline))
            except (_TimedOut, _Closed):
                self._timeout(name, "the server to notice the close")
                return
            if not any(needle in line for line in listing):
                return
            if time.monotonic() > deadline:
                self._timeout(name, "the server to notice the close")
                return
            time.sleep(0.02)

    def _admin(self, name: str, line: bytes) -> None:
        c = self.conn(name)
        self.lines.append(f"{name} -> ADMIN {_show(self.norm(line))}")
        c.send(line)
        deadline = self._deadline(READ_TIMEOUT)
        got: list[bytes] = []
        try:
            first = c.read_line(deadline)
            got.append(first)
            if not (first.startswith((b"OK", b"ERR")) or first == _ADMIN_LIST_END):
                while got[-1] != _ADMIN_LIST_END:
                    got.append(c.read_line(deadline))
        except _TimedOut:
            if got:
                self.lines.append(f"{name} <- ADMIN partial {got!r}")
            self._timeout(name, "admin reply")
            return
        except _Closed:
            if got:
                self.lines.append(f"{name} <- ADMIN partial {got!r}")
            self.lines.append(f"{name} <- CLOSED")
            return
        rendered = _normalise_admin(_admin_command(line), got, self.norm)
        self.lines.append(f"{name} <- ADMIN [{', '.join(rendered)}]")

    def close(self) -> None:
        for c in self.conns.values():
            c.close()
        if self.poller is not None:
            self.poller.close()


def play(port: int, steps: Iterable[Step]) -> list[str]:
    """Run ``steps`` against the server on ``port``; return the normalised transcript."""
    player = Player(port)
    try:
        for st in steps:
            player.step(st)
    finally:
        player.close()
    return player.lines


def sent_packet_types(steps: Sequence[Step]) -> set[int]:
    """Packet type numbers (any magic, incl. invalid ones) a conversation sends."""
    types: set[int] = set()
    for st in steps:
        if isinstance(st, Send):
            data = st.data() if callable(st.data) else st.data
            pos = 0
            while pos + 12 <= len(data) and data[pos] == 0:
                _magic, ptype, size = struct.unpack_from(">4sII", data, pos)
                types.add(ptype)
                pos += 12 + size
    return types


def sent_magics(steps: Sequence[Step]) -> set[bytes]:
    """The 4-byte magics of every binary packet a conversation sends."""
    magics: set[bytes] = set()
    for st in steps:
        if isinstance(st, Send):
            data = st.data() if callable(st.data) else st.data
            pos = 0
            while pos + 12 <= len(data) and data[pos] == 0:
                magic, _ptype, size = struct.unpack_from(">4sII", data, pos)
                magics.add(magic)
                pos += 12 + size
    return magics


def admin_commands(steps: Sequence[Step]) -> set[str]:
    """Normalised admin command names a conversation uses (two words for show/cancel/...)."""
    names: set[str] = set()
    for st in steps:
        if isinstance(st, Admin):
            words = st.line.strip().lower().split()
            if not words:
                names.add("<empty>")
            elif words[0] in (b"show", b"cancel", b"create", b"drop") and len(words) > 1:
                key = b" ".join(words[:3] if words[1] == b"unique" else words[:2])
                names.add(key.decode(errors="replace"))
            else:
                names.add(words[0].decode(errors="replace"))
    return names
