"""Admin (text) protocol replies, parsed into typed rows; sans-IO.

How it works: an admin command gets either one line (``OK ...``, ``ERR code text`` or,
from the Perl server, a bare value) or a list of lines closed by a line holding a single
``.``.  ``AdminReplyReader`` is fed bytes and returns complete replies as lists of
``str`` lines; it must be told up front, per command, which kind of reply to expect
(``expects_list``).  ``AdminProtocol`` wraps it for one connection: it encodes each
command and hands its reply back with the command's tag.  The ``parse_*`` functions
turn reply lines into frozen rows, and ``sum_by_name`` adds several servers' rows up.

Parsing is lenient, as gearadmin's own output is: lines may end in ``\\n`` or
``\\r\\n``, columns may be separated by tabs or runs of spaces, and rows that do not
fit are skipped rather than failing a whole listing.  ``ERR`` replies become the most
specific ``ServerError`` through ``gearshift.errors.server_error``.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from dataclasses import astuple, dataclass
from typing import Final, TypeVar

from gearshift.errors import LocalProtocolError, RemoteProtocolError, ServerError, server_error

#: Commands whose reply is a list closed by ``.`` (first token, lower case).
LIST_COMMANDS: Final = frozenset({"status", "prioritystatus", "workers", "show", "jobs", "clients"})
#: Commands whose reply is always a single line.
SINGLE_COMMANDS: Final = frozenset(
    {"version", "getpid", "verbose", "cancel", "create", "drop", "maxqueue", "shutdown"}
)

_CODE = re.compile(r"^[A-Z][A-Z0-9_]*$")


@dataclass(frozen=True, slots=True)
class FunctionStatus:
    """One row of ``status``.

    Attributes:
        name: the function name.
        total: jobs queued or running (gearmand's TOTAL column).
        running: jobs a worker is running now.
        workers: workers registered for the function.
    """

    name: str
    total: int
    running: int
    workers: int

    @property
    def queued(self) -> int:
        """Jobs waiting for a worker (``total - running``)."""
        return max(self.total - self.running, 0)


@dataclass(frozen=True, slots=True)
class PriorityStatus:
    """One row of ``prioritystatus``: queued (not running) jobs per priority."""

    name: str
    high: int
    normal: int
    low: int
    workers: int


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One row of ``workers``: every connection, clients and admin ones included.

    Attributes:
        fd: the server's file descriptor number for the connection.
        address: the peer's IP address.
        client_id: what SET_CLIENT_ID set, or None (gearmand prints ``-``).
        functions: registered functions, most recent first as gearmand lists them.
    """

    fd: int
    address: str
    client_id: str | None
    functions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class JobInfo:
    """One row of ``show jobs``.

    Attributes:
        handle: the job handle.
        retries: how often the job was requeued after losing its worker.
        ignored: the job will be dropped when reached (its clients left or it was cancelled).
        background: the job came from a background submit (gearmand's QUEUED column).
    """

    handle: str
    retries: int
    ignored: bool
    background: bool


@dataclass(frozen=True, slots=True)
class StoredJobInfo:
    """One row of ``show stored jobs`` (gearshift): a job as the store holds it.

    Attributes:
        key: the store's key for the row (a row id, a Redis key, ...).
        function: the function name.
        unique: the unique id (may be empty).
        priority: 0 high, 1 normal, 2 low.
        when: epoch time before which it must not run (0: now).
        size: payload length in bytes.
    """

    key: str
    function: str
    unique: str
    priority: int
    when: int
    size: int


@dataclass(frozen=True, slots=True)
class StoreInfo:
    """The reply to ``show store`` (gearshift): the durable queue a server uses.

    Attributes:
        kind: ``memory``, ``sqlite``, ``postgres``, ``redis`` or ``mysql``.
        description: where it keeps its jobs (no password).
        persistent: False for the memory store.
        cluster: the cluster name when the store is shared by a cluster, else None.
    """

    kind: str
    description: str
    persistent: bool
    cluster: str | None


@dataclass(frozen=True, slots=True)
class ClusterMember:
    """One row of ``cluster`` (gearshift): a server sharing the clustered store.

    Attributes:
        node: its name in the cluster (``host:port`` by default).
        epoch: grows each time it (re)joins.
        state: ``self`` (the server asked), ``alive`` or ``expired``.
        lease_age: seconds since it last renewed its lease.
        lease_remaining: seconds left on its lease (negative: expired that long ago).
        jobs: background jobs it holds in the store.
        address: where it listens.
    """

    node: str
    epoch: int
    state: str
    lease_age: float
    lease_remaining: float
    jobs: int
    address: str

    @property
    def alive(self) -> bool:
        """True while its lease runs."""
        return self.state != "expired"


def expects_list(command: str) -> bool | None:
    """Whether ``command``'s reply is a ``.``-terminated list.

    Returns True or False when the command is known, None when only the first reply
    line can tell (``OK``/``ERR`` mean a single line, anything else starts a list).
    """
    words = command.split()
    if not words:
        return False
    name = words[0].lower()
    if name in LIST_COMMANDS:
        return True
    if name in SINGLE_COMMANDS:
        return False
    return None


def is_single_line_reply(line: str) -> bool:
    """True for ``OK ...`` / ``ERR ...`` lines, which are complete replies on their own."""
    return line == "OK" or line.startswith(("OK ", "ERR ")) or line == "ERR"


class AdminReplyReader:
    """Splits an admin reply stream into replies, one per command sent, in order.

    Call ``expect(command)`` for each command as it is sent, then ``feed(data)``;
    ``feed`` returns the replies completed so far, each a list of lines (without
    terminators; a list reply does not include its closing ``.``).

    Args:
        max_line: the longest line accepted before the stream is declared broken.
    """

    def __init__(self, max_line: int = 1 << 20) -> None:
        self._buf = bytearray()
        self._expect: deque[bool | None] = deque()
        self._lines: list[str] = []
        self.max_line = max_line

    def expect(self, command: str) -> None:
        """Record that ``command`` was sent and its reply will follow the earlier ones."""
        self._expect.append(expects_list(command))

    @property
    def pending(self) -> int:
        """Replies still expected."""
        return len(self._expect)

    def feed(self, data: bytes) -> list[list[str]]:
        """Add bytes; return the replies they complete.

        Raises:
            ValueError: a line longer than ``max_line``, or data nobody asked for.
        """
        self._buf += data
        done: list[list[str]] = []
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > self.max_line:
                    raise ValueError("admin reply line too long")
                return done
            raw = bytes(self._buf[:nl])
            del self._buf[: nl + 1]
            line = raw[:-1] if raw.endswith(b"\r") else raw
            text = line.decode("utf-8", "replace")
            if not self._expect:
                raise ValueError(f"unexpected admin reply line {text!r}")
            kind = self._expect[0]
            # A list command refused by the server (an old gearmand, the Perl server)
            # answers with one ERR line and no closing ".".
            single = kind is False or (
                is_single_line_reply(text) and (kind is None or text.startswith("ERR"))
            )
            if not self._lines and single:
                self._expect.popleft()
                done.append([text])
                continue
            if text == ".":
                self._expect.popleft()
                done.append(self._lines)
                self._lines = []
                continue
            self._lines.append(text)


@dataclass(frozen=True, slots=True)
class AdminReply:
    """The reply to the admin command tagged ``tag``: its lines, as ``AdminReplyReader``
    returns them."""

    tag: object
    lines: list[str]


class AdminProtocol:
    """The client side of one admin connection, sans I/O: commands out, tagged replies in.

    Replies come in the order the commands were sent, so each one answers the oldest
    command still waiting.
    """

    def __init__(self, max_line: int = 1 << 20) -> None:
        self._reader = AdminReplyReader(max_line)
        self._tags: deque[object] = deque()
        self.closed = False

    def command(self, command: str, *, tag: object = None) -> bytes:
        """Encode one admin command; its AdminReply will carry ``tag``.

        Raises:
            ValueError: the command spans lines.
            LocalProtocolError: the connection is closed.
        """
        check_command(command)
        if self.closed:
            raise LocalProtocolError("connection is closed")
        self._reader.expect(command)
        self._tags.append(tag)
        return command.encode() + b"\r\n"

    @property
    def pending_tags(self) -> list[object]:
        """Tags of the commands still waiting for their reply, oldest first."""
        return list(self._tags)

    def receive_data(self, data: bytes) -> list[AdminReply]:
        """Feed bytes from the server; return the replies they complete.

        Raises:
            RemoteProtocolError: a line too long, or a reply nobody asked for.
        """
        try:
            replies = self._reader.feed(data)
        except ValueError as exc:
            raise RemoteProtocolError(str(exc)) from exc
        return [AdminReply(self._tags.popleft(), lines) for lines in replies]

    def connection_lost(self) -> list[object]:
        """Mark the connection dead; return the tags of the commands left unanswered."""
        tags = self.pending_tags
        self._tags.clear()
        self.closed = True
        return tags


def parse_error(line: str) -> ServerError:
    """Turn an ``ERR code text`` line into the matching ServerError.

    gearmand writes spaces in the text as ``+``; they are turned back into spaces.
    Replies whose second word is not an upper-case code (``ERR function not found``)
    get the code ``ERR`` and the whole message as text.
    """
    rest = line[3:].strip() if line.startswith("ERR") else line
    code, _, text = rest.partition(" ")
    if not _CODE.match(code):
        return server_error("ERR", rest)
    return server_error(code, text.replace("+", " "))


def check_ok(lines: list[str]) -> str:
    """Return what follows ``OK`` in a single-line reply; raise ServerError for ``ERR``.

    A bare line (the Perl server's ``version``) is returned as it is.
    """
    line = lines[0] if lines else ""
    if line.startswith("ERR"):
        raise parse_error(line)
    if line == "OK":
        return ""
    if line.startswith("OK "):
        return line[3:].strip()
    return line.strip()


def _check_list(lines: list[str]) -> list[str]:
    # A list command answered with a single ERR line (an old or foreign server).
    if len(lines) == 1 and lines[0].startswith("ERR"):
        raise parse_error(lines[0])
    return lines


def _fields(line: str) -> list[str]:
    return line.split("\t") if "\t" in line else line.split()


def _int(text: str) -> int:
    text = text.strip()
    return int(text) if text.lstrip("-").isdigit() else 0


def parse_status(lines: list[str]) -> list[FunctionStatus]:
    """Parse ``status`` rows: ``FUNC\\tTOTAL\\tRUNNING\\tWORKERS``."""
    rows = []
    for line in _check_list(lines):
        f = _fields(line)
        if len(f) >= 4:
            rows.append(FunctionStatus(f[0], _int(f[1]), _int(f[2]), _int(f[3])))
    return rows


def parse_priority_status(lines: list[str]) -> list[PriorityStatus]:
    """Parse ``prioritystatus`` rows: ``FUNC\\tHIGH\\tNORMAL\\tLOW\\tWORKERS``."""
    rows = []
    for line in _check_list(lines):
        f = _fields(line)
        if len(f) >= 5:
            rows.append(PriorityStatus(f[0], _int(f[1]), _int(f[2]), _int(f[3]), _int(f[4])))
    return rows


def parse_workers(lines: list[str]) -> list[WorkerInfo]:
    """Parse ``workers`` rows: ``FD IP CLIENT-ID : f1 f2 ...``."""
    rows = []
    for line in _check_list(lines):
        head, sep, tail = line.partition(":")
        # IPv6 addresses contain colons: the separator is the " : " after the client id.
        if " : " in line:
            head, _, tail = line.partition(" : ")
        elif line.rstrip().endswith(" :"):
            head, tail = line.rstrip()[:-2], ""
        elif not sep:
            continue
        parts = head.split()
        if len(parts) < 3:
            continue
        client_id = " ".join(parts[2:])
        rows.append(
            WorkerInfo(
                fd=_int(parts[0]),
                address=parts[1],
                client_id=None if client_id == "-" else client_id,
                functions=tuple(tail.split()),
            )
        )
    return rows


def parse_show_jobs(lines: list[str]) -> list[JobInfo]:
    """Parse ``show jobs`` rows: ``HANDLE\\tRETRIES\\tIGNORE\\tQUEUED``."""
    rows = []
    for line in _check_list(lines):
        f = _fields(line)
        if len(f) >= 4:
            rows.append(JobInfo(f[0], _int(f[1]), _int(f[2]) != 0, _int(f[3]) != 0))
    return rows


def parse_show_unique_jobs(lines: list[str]) -> list[str]:
    """Parse ``show unique jobs``: one unique id per line (empty ids stay empty)."""
    return list(_check_list(lines))


def parse_show_stored_jobs(lines: list[str]) -> list[StoredJobInfo]:
    """Parse ``show stored jobs``: ``KEY\\tFUNCTION\\tUNIQUE\\tPRIORITY\\tWHEN\\tSIZE``."""
    rows = []
    for line in _check_list(lines):
        f = line.split("\t")
        if len(f) >= 6:
            rows.append(StoredJobInfo(f[0], f[1], f[2], _int(f[3]), _int(f[4]), _int(f[5])))
    return rows


def parse_show_store(lines: list[str]) -> StoreInfo:
    """Parse ``show store``: ``KIND\\tDESCRIPTION\\tpersistent|memory\\tCLUSTER|-``."""
    for line in _check_list(lines):
        f = line.split("\t")
        if len(f) >= 4:
            return StoreInfo(f[0], f[1], f[2] == "persistent", None if f[3] == "-" else f[3])
    raise server_error("UNKNOWN_ERROR", "no store row")


def parse_cluster(lines: list[str]) -> list[ClusterMember]:
    """Parse ``cluster``: ``NODE\\tEPOCH\\tSTATE\\tAGE\\tREMAINING\\tJOBS\\tADDRESS``."""
    rows = []
    for line in _check_list(lines):
        f = line.split("\t")
        if len(f) >= 7:
            rows.append(
                ClusterMember(f[0], _int(f[1]), f[2], float(f[3]), float(f[4]), _int(f[5]), f[6])
            )
    return rows


def maxqueue_command(function: str, size: int | tuple[int, int, int] | None) -> str:
    """Render ``maxqueue F [N | H N L]``; None resets the limit."""
    if size is None:
        return f"maxqueue {function}"
    if isinstance(size, tuple):
        high, normal, low = size
        return f"maxqueue {function} {int(high)} {int(normal)} {int(low)}"
    return f"maxqueue {function} {int(size)}"


def check_command(command: str) -> str:
    """Refuse a command that spans lines (it would be several commands)."""
    if "\n" in command or "\r" in command:
        raise ValueError("admin command must be one line")
    return command


def check_token(value: str, what: str) -> str:
    """Refuse arguments that would split into several admin tokens or lines."""
    if not value or any(c.isspace() for c in value):
        raise ValueError(f"{what} must be non-empty and contain no whitespace: {value!r}")
    return value


Row = TypeVar("Row", FunctionStatus, PriorityStatus)


def sum_by_name(row_lists: Iterable[list[Row]]) -> list[Row]:
    """Rows of several servers added up per function (every field after ``name``), in
    the order the functions were first seen: the totals of a cluster's ``status`` or
    ``prioritystatus``."""
    totals: dict[str, Row] = {}
    for rows in row_lists:
        for row in rows:
            seen = totals.get(row.name)
            if seen is None:
                totals[row.name] = row
            else:
                counts = [a + b for a, b in zip(astuple(seen)[1:], astuple(row)[1:], strict=True)]
                totals[row.name] = type(row)(row.name, *counts)
    return list(totals.values())
