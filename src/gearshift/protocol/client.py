"""The client side of one Gearman connection, sans I/O.

How it works: every request method (``submit``, ``get_status``, ``echo`` ...) returns
the bytes to write and records a *pending request* carrying the caller's ``tag`` (any
object: the asyncio shell passes a future).  ``receive_data(bytes)`` decodes what the
server sent and returns events; a reply event carries the tag of the request it
answers, so the shell never has to match replies itself.

Matching replies to requests follows gearmand's rule that one connection's requests
are answered in the order they were sent.  ``REPLY_TO`` below is the one table saying
which reply answers which kind of request: a JOB_CREATED answers the oldest pending
submit, an ECHO_RES the oldest echo, and so on.  Matching per kind (rather than one
global FIFO) keeps working with a server that answers an ECHO before a background
submit it is still writing to disk.  An ERROR packet answers the oldest pending request
of any kind (that is what a failed submit, an unknown option or a bad status request
looks like); with nothing pending it is reported on its own.

Results (WORK_DATA, WORK_STATUS, WORK_COMPLETE ...) are keyed by job handle and come as
``WorkUpdate`` events.  gearmand sends clients that did not ask for exceptions a
WORK_FAIL whose body is the handle plus a trailing NUL; the NUL is stripped here.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from gearshift.errors import (
    LocalProtocolError,
    RemoteProtocolError,
    ServerError,
    server_error,
)
from gearshift.protocol.codec import Decoder, Packet, encode_request
from gearshift.protocol.packets import (
    ARG_LIMIT,
    DEFAULT_MAX_PACKET_SIZE,
    SUBMIT_TYPES,
    PacketType,
    Priority,
)

#: Longest unique id gearmand accepts.
MAX_UNIQUE: Final = 64


class RequestKind(enum.Enum):
    """The kinds of request that get a reply."""

    SUBMIT = "submit"
    STATUS = "status"
    STATUS_UNIQUE = "status_unique"
    ECHO = "echo"
    OPTION = "option"


#: Reply packet type -> the kind of request it answers (the one transition table).
REPLY_TO: Final[dict[int, RequestKind]] = {
    PacketType.JOB_CREATED: RequestKind.SUBMIT,
    PacketType.STATUS_RES: RequestKind.STATUS,
    PacketType.STATUS_RES_UNIQUE: RequestKind.STATUS_UNIQUE,
    PacketType.ECHO_RES: RequestKind.ECHO,
    PacketType.OPTION_RES: RequestKind.OPTION,
}

#: Packets reporting on a job, keyed by handle.
WORK_TYPES: Final = frozenset(
    {
        PacketType.WORK_DATA,
        PacketType.WORK_WARNING,
        PacketType.WORK_STATUS,
        PacketType.WORK_COMPLETE,
        PacketType.WORK_FAIL,
        PacketType.WORK_EXCEPTION,
    }
)
#: Work packets that end a job.
FINAL_WORK_TYPES: Final = frozenset(
    {PacketType.WORK_COMPLETE, PacketType.WORK_FAIL, PacketType.WORK_EXCEPTION}
)


def _int(raw: bytes) -> int:
    # gearmand parses these with atoi: garbage reads as 0.
    try:
        return int(raw)
    except ValueError:
        return 0


@dataclass(frozen=True, slots=True)
class JobStatus:
    """What the server knows about a job (GET_STATUS / GET_STATUS_UNIQUE).

    Attributes:
        handle: the job handle (None for a status asked by unique id).
        unique: the unique id (None for a status asked by handle).
        known: the server holds the job (queued or running).
        running: a worker is running it.
        numerator: the last WORK_STATUS numerator.
        denominator: the last WORK_STATUS denominator.
        waiting: foreground clients waiting for it (GET_STATUS_UNIQUE only).
    """

    handle: str | None
    unique: str | None
    known: bool
    running: bool
    numerator: int
    denominator: int
    waiting: int | None = None

    @classmethod
    def from_packet(cls, packet: Packet) -> JobStatus:
        """Build from a STATUS_RES or STATUS_RES_UNIQUE packet."""
        a = packet.args
        if packet.type == PacketType.STATUS_RES_UNIQUE:
            return cls(
                None,
                a[0].decode("utf-8", "replace"),
                a[1] == b"1",
                a[2] == b"1",
                _int(a[3]),
                _int(a[4]),
                _int(a[5]),
            )
        return cls(
            a[0].decode("utf-8", "replace"),
            None,
            a[1] == b"1",
            a[2] == b"1",
            _int(a[3]),
            _int(a[4]),
        )


@dataclass(frozen=True, slots=True)
class JobCreated:
    """JOB_CREATED: the submit tagged ``tag`` now has a handle."""

    tag: object
    handle: bytes
    background: bool


@dataclass(frozen=True, slots=True)
class WorkUpdate:
    """A WORK_* packet about a job this connection submitted.

    ``type`` is WORK_DATA, WORK_WARNING, WORK_STATUS, WORK_COMPLETE, WORK_FAIL or
    WORK_EXCEPTION; ``data`` is the payload (empty for STATUS and FAIL);
    ``numerator``/``denominator`` are set for WORK_STATUS.
    """

    type: PacketType
    handle: bytes
    data: bytes = b""
    numerator: int = 0
    denominator: int = 0

    @property
    def final(self) -> bool:
        """True if the job is over (COMPLETE, FAIL or EXCEPTION)."""
        return self.type in FINAL_WORK_TYPES


@dataclass(frozen=True, slots=True)
class StatusReply:
    """STATUS_RES or STATUS_RES_UNIQUE for the request tagged ``tag``."""

    tag: object
    status: JobStatus


@dataclass(frozen=True, slots=True)
class EchoReply:
    """ECHO_RES for the request tagged ``tag``."""

    tag: object
    data: bytes


@dataclass(frozen=True, slots=True)
class OptionAccepted:
    """OPTION_RES: the server turned ``option`` on."""

    tag: object
    option: bytes


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """An ERROR packet answering the request tagged ``tag``."""

    tag: object
    kind: RequestKind
    error: ServerError


@dataclass(frozen=True, slots=True)
class ServerErrorReceived:
    """An ERROR packet that answers no pending request."""

    error: ServerError


ClientEvent = (
    JobCreated
    | WorkUpdate
    | StatusReply
    | EchoReply
    | OptionAccepted
    | RequestFailed
    | ServerErrorReceived
)


@dataclass(slots=True, eq=False)
class _Pending:
    kind: RequestKind
    tag: object
    key: bytes = b""
    background: bool = False
    answered: bool = field(default=False)


def _check_arg(value: bytes, what: str) -> bytes:
    if b"\0" in value:
        raise LocalProtocolError(f"{what} must not contain NUL bytes")
    return value


def check_submit(
    function: bytes, unique: bytes, priority: Priority, background: bool, when: int | None
) -> None:
    """Raise LocalProtocolError for a submit that ``ClientProtocol.submit`` would refuse."""
    _check_arg(function, "function")
    _check_arg(unique, "unique")
    if not function:
        raise LocalProtocolError("function name must not be empty")
    if len(function) >= ARG_LIMIT:
        raise LocalProtocolError(
            f"function name of {len(function)} bytes (servers take at most {ARG_LIMIT - 1})"
        )
    if len(unique) > MAX_UNIQUE:
        raise LocalProtocolError(f"unique id longer than {MAX_UNIQUE} bytes")
    if when is not None and (not background or priority != Priority.NORMAL):
        raise LocalProtocolError("when= is only for background jobs at normal priority")


class ClientProtocol:
    """The state of one client connection: pending requests and running foreground jobs.

    Args:
        max_packet_size: the largest reply body accepted.
    """

    def __init__(self, *, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE) -> None:
        self._decoder = Decoder(max_packet_size, allow_admin=False)
        self._order: deque[_Pending] = deque()
        self._by_kind: dict[RequestKind, deque[_Pending]] = {k: deque() for k in RequestKind}
        #: Foreground handles this connection waits on -> number of submits sharing it.
        self._jobs: dict[bytes, int] = {}
        self.closed = False

    # -- requests --------------------------------------------------------------------

    def _request(self, pending: _Pending, packet: bytes) -> bytes:
        if self.closed:
            raise LocalProtocolError("connection is closed")
        self._order.append(pending)
        self._by_kind[pending.kind].append(pending)
        return packet

    def submit(
        self,
        function: bytes,
        data: bytes,
        *,
        unique: bytes = b"",
        priority: Priority = Priority.NORMAL,
        background: bool = False,
        when: int | None = None,
        tag: object = None,
    ) -> bytes:
        """Encode a SUBMIT_JOB* packet; its JOB_CREATED will carry ``tag``.

        ``when`` (epoch seconds) sends SUBMIT_JOB_EPOCH, which gearmand only offers for
        background jobs at normal priority.

        Raises:
            LocalProtocolError: NUL in function or unique, a unique over 64 bytes, an
                empty function, or ``when`` for a foreground or non-normal job.
        """
        check_submit(function, unique, priority, background, when)
        if when is not None:
            packet = encode_request(
                PacketType.SUBMIT_JOB_EPOCH, function, unique, str(int(when)).encode(), data
            )
        else:
            packet = encode_request(SUBMIT_TYPES[(priority, background)], function, unique, data)
        return self._request(_Pending(RequestKind.SUBMIT, tag, background=background), packet)

    def get_status(self, handle: bytes, *, tag: object = None) -> bytes:
        """Encode GET_STATUS; the StatusReply will carry ``tag``."""
        _check_arg(handle, "handle")
        packet = encode_request(PacketType.GET_STATUS, handle)
        return self._request(_Pending(RequestKind.STATUS, tag, handle), packet)

    def get_status_unique(self, unique: bytes, *, tag: object = None) -> bytes:
        """Encode GET_STATUS_UNIQUE; the StatusReply will carry ``tag``."""
        _check_arg(unique, "unique")
        packet = encode_request(PacketType.GET_STATUS_UNIQUE, unique)
        return self._request(_Pending(RequestKind.STATUS_UNIQUE, tag, unique), packet)

    def echo(self, data: bytes, *, tag: object = None) -> bytes:
        """Encode ECHO_REQ; the EchoReply will carry ``tag``."""
        return self._request(
            _Pending(RequestKind.ECHO, tag), encode_request(PacketType.ECHO_REQ, data)
        )

    def option(self, name: bytes, *, tag: object = None) -> bytes:
        """Encode OPTION_REQ (``exceptions`` is the one gearmand knows)."""
        _check_arg(name, "option")
        packet = encode_request(PacketType.OPTION_REQ, name)
        return self._request(_Pending(RequestKind.OPTION, tag, name), packet)

    def set_client_id(self, client_id: bytes) -> bytes:
        """Encode SET_CLIENT_ID (no reply)."""
        if self.closed:
            raise LocalProtocolError("connection is closed")
        return encode_request(PacketType.SET_CLIENT_ID, _check_arg(client_id, "client id"))

    def forget(self, handle: bytes) -> None:
        """Stop expecting results for one submit of ``handle`` (the caller gave up)."""
        count = self._jobs.get(handle, 0)
        if count > 1:
            self._jobs[handle] = count - 1
        else:
            self._jobs.pop(handle, None)

    # -- state -----------------------------------------------------------------------

    @property
    def pending_tags(self) -> list[object]:
        """Tags of requests still waiting for their reply, oldest first."""
        return [p.tag for p in self._order if not p.answered]

    @property
    def active_handles(self) -> list[bytes]:
        """Foreground jobs created here that have not finished."""
        return list(self._jobs)

    @property
    def idle(self) -> bool:
        """True when nothing is pending and no foreground job is running."""
        return not self._jobs and not any(not p.answered for p in self._order)

    def connection_lost(self) -> tuple[list[object], list[bytes]]:
        """Mark the connection dead; return (pending request tags, active handles)."""
        tags = self.pending_tags
        handles = self.active_handles
        self.closed = True
        self._order.clear()
        for queue in self._by_kind.values():
            queue.clear()
        self._jobs.clear()
        return tags, handles

    # -- replies ---------------------------------------------------------------------

    def _answer(self, kind: RequestKind, key: bytes | None = None) -> _Pending:
        # _take() keeps every queue's head unanswered, so queue[0] is the oldest waiting.
        queue = self._by_kind[kind]
        if not queue:
            raise RemoteProtocolError(f"{kind.value} reply with no {kind.value} request pending")
        pending = queue[0]
        if key is not None and pending.key != key:
            # Status and option replies name what they answer; prefer an exact match.
            for candidate in queue:
                if not candidate.answered and candidate.key == key:
                    pending = candidate
                    break
        self._take(pending)
        return pending

    def _take(self, pending: _Pending) -> None:
        pending.answered = True
        queue = self._by_kind[pending.kind]
        while queue and queue[0].answered:
            queue.popleft()
        while self._order and self._order[0].answered:
            self._order.popleft()

    def receive_data(self, data: bytes) -> list[ClientEvent]:
        """Feed bytes read from the server; return the events they complete.

        Raises:
            RemoteProtocolError: bad framing, a request packet, a packet a client does
                not expect, or a reply with no matching request.
        """
        events: list[ClientEvent] = []
        for packet in self._decoder.feed(data):
            assert isinstance(packet, Packet)  # allow_admin=False: never an AdminLine
            events.append(self._handle(packet))
        return events

    def _handle(self, packet: Packet) -> ClientEvent:
        if packet.request:
            raise RemoteProtocolError(f"server sent a request packet (type {packet.type})")
        ptype = packet.type
        args = packet.args
        if ptype in WORK_TYPES:
            handle = args[0]
            if ptype == PacketType.WORK_FAIL:
                # gearmand's WORK_FAIL to clients without the exceptions option: "H:x:1\0".
                handle = handle.rstrip(b"\0")
                update = WorkUpdate(PacketType.WORK_FAIL, handle)
            elif ptype == PacketType.WORK_STATUS:
                update = WorkUpdate(
                    PacketType.WORK_STATUS, handle, b"", _int(args[1]), _int(args[2])
                )
            else:
                update = WorkUpdate(PacketType(ptype), handle, args[1])
            if update.final:
                self.forget(handle)
            return update
        kind = REPLY_TO.get(ptype)
        if kind is not None:
            if kind is RequestKind.SUBMIT:
                pending = self._answer(kind)
                if not pending.background:
                    self._jobs[args[0]] = self._jobs.get(args[0], 0) + 1
                return JobCreated(pending.tag, args[0], pending.background)
            if kind is RequestKind.ECHO:
                return EchoReply(self._answer(kind).tag, args[0])
            if kind is RequestKind.OPTION:
                return OptionAccepted(self._answer(kind, args[0]).tag, args[0])
            pending = self._answer(kind, args[0])
            return StatusReply(pending.tag, JobStatus.from_packet(packet))
        if ptype == PacketType.ERROR:
            error = server_error(
                args[0].decode("utf-8", "replace"), args[1].decode("utf-8", "replace")
            )
            if not self._order:
                return ServerErrorReceived(error)
            oldest = self._order[0]
            self._take(oldest)
            return RequestFailed(oldest.tag, oldest.kind, error)
        raise RemoteProtocolError(f"a client does not expect {PacketType(ptype).name}")
