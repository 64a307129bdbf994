"""The worker side of one Gearman connection, sans I/O.

How it works: a worker connection is always in one of three grab states::

    IDLE ──grab()──> GRABBING ──NO_JOB / JOB_ASSIGN*──> IDLE
    IDLE ──pre_sleep()──> SLEEPING ──NOOP──> IDLE
    SLEEPING ──grab()──> GRABBING

``TRANSITIONS`` is the whole table; anything else raises LocalProtocolError when we
would send it and RemoteProtocolError when the server sent it.  At most one GRAB is in
flight per connection, so a JOB_ASSIGN always answers the GRAB we sent; the shell
decides *whether* to grab (only while it has a free slot).  A NOOP outside SLEEPING is
harmless (gearmand sends one per sleep cycle, which may cross our next GRAB) and is
reported without a state change.

Results (WORK_DATA ... WORK_EXCEPTION) may only be sent for handles the server
assigned to this connection and not yet finished; the final ones forget the handle.
ECHO and OPTION replies are matched to their requests in order, like the client's.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from gearshift.errors import LocalProtocolError, RemoteProtocolError, ServerError, server_error
from gearshift.protocol.client import EchoReply, OptionAccepted, RequestFailed, RequestKind
from gearshift.protocol.codec import Decoder, Packet, encode_request
from gearshift.protocol.packets import ARG_LIMIT, DEFAULT_MAX_PACKET_SIZE, PacketType


class GrabState(enum.Enum):
    """Where a worker connection is in its grab / sleep cycle."""

    IDLE = "idle"
    GRABBING = "grabbing"
    SLEEPING = "sleeping"


_GRAB_TYPES: Final = frozenset(
    {PacketType.GRAB_JOB, PacketType.GRAB_JOB_UNIQ, PacketType.GRAB_JOB_ALL}
)
_ASSIGN_TYPES: Final = frozenset(
    {PacketType.JOB_ASSIGN, PacketType.JOB_ASSIGN_UNIQ, PacketType.JOB_ASSIGN_ALL}
)

#: (state, packet we send or receive) -> next state.  The one transition table.
TRANSITIONS: Final[dict[tuple[GrabState, int], GrabState]] = {
    **{(GrabState.IDLE, t): GrabState.GRABBING for t in _GRAB_TYPES},
    **{(GrabState.SLEEPING, t): GrabState.GRABBING for t in _GRAB_TYPES},
    (GrabState.IDLE, PacketType.PRE_SLEEP): GrabState.SLEEPING,
    (GrabState.GRABBING, PacketType.NO_JOB): GrabState.IDLE,
    **{(GrabState.GRABBING, t): GrabState.IDLE for t in _ASSIGN_TYPES},
    (GrabState.SLEEPING, PacketType.NOOP): GrabState.IDLE,
    (GrabState.IDLE, PacketType.NOOP): GrabState.IDLE,
    (GrabState.GRABBING, PacketType.NOOP): GrabState.GRABBING,
}

#: Grab flavours by name: which GRAB packet to send.
GRAB_PACKETS: Final[dict[str, PacketType]] = {
    "plain": PacketType.GRAB_JOB,
    "uniq": PacketType.GRAB_JOB_UNIQ,
    "all": PacketType.GRAB_JOB_ALL,
}


@dataclass(frozen=True, slots=True)
class Noop:
    """NOOP: the server has work for us (or just woke us)."""


@dataclass(frozen=True, slots=True)
class NoJob:
    """NO_JOB: the GRAB tagged ``tag`` found nothing."""

    tag: object = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class JobAssigned:
    """JOB_ASSIGN / JOB_ASSIGN_UNIQ / JOB_ASSIGN_ALL: run this job.

    ``unique`` is empty for a plain JOB_ASSIGN; ``reducer`` is set only by JOB_ASSIGN_ALL;
    ``tag`` is the tag of the GRAB it answers.
    """

    handle: bytes
    function: bytes
    unique: bytes
    data: bytes
    reducer: bytes = b""
    tag: object = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class WorkerErrorReceived:
    """An ERROR packet that answers no pending request (e.g. JOB_NOT_FOUND for a late result)."""

    error: ServerError


WorkerEvent = (
    Noop | NoJob | JobAssigned | EchoReply | OptionAccepted | RequestFailed | WorkerErrorReceived
)


def _check(value: bytes, what: str) -> bytes:
    if b"\0" in value:
        raise LocalProtocolError(f"{what} must not contain NUL bytes")
    return value


class WorkerProtocol:
    """The state of one worker connection.

    Args:
        grab: which GRAB packet to send: ``"uniq"`` (GRAB_JOB_UNIQ, the default),
            ``"all"`` (GRAB_JOB_ALL, also reports reducers) or ``"plain"`` (GRAB_JOB).
        max_packet_size: the largest packet body accepted.
    """

    def __init__(
        self, *, grab: str = "uniq", max_packet_size: int = DEFAULT_MAX_PACKET_SIZE
    ) -> None:
        try:
            self._grab_type = GRAB_PACKETS[grab]
        except KeyError:
            raise ValueError(f"grab must be one of {sorted(GRAB_PACKETS)}") from None
        self._decoder = Decoder(max_packet_size, allow_admin=False)
        self.state = GrabState.IDLE
        self.assigned: set[bytes] = set()
        self._pending: deque[tuple[RequestKind, object]] = deque()
        #: The tag of the GRAB in flight (there is at most one).
        self._grab_tag: object = None
        self.closed = False

    def _move(self, ptype: int, *, remote: bool) -> None:
        nxt = TRANSITIONS.get((self.state, ptype))
        if nxt is None:
            name = PacketType(ptype).name
            if remote:
                raise RemoteProtocolError(f"server sent {name} while {self.state.value}")
            raise LocalProtocolError(f"cannot send {name} while {self.state.value}")
        self.state = nxt

    def _out(self, ptype: PacketType, *args: bytes) -> bytes:
        if self.closed:
            raise LocalProtocolError("connection is closed")
        return encode_request(ptype, *args)

    # -- registration ----------------------------------------------------------------

    def set_client_id(self, client_id: bytes) -> bytes:
        """SET_CLIENT_ID: the id ``workers`` shows for this connection."""
        return self._out(PacketType.SET_CLIENT_ID, _check(client_id, "client id"))

    def can_do(self, function: bytes, timeout_ms: int | None = None) -> bytes:
        """CAN_DO, or CAN_DO_TIMEOUT when ``timeout_ms`` is given."""
        if not function:
            raise LocalProtocolError("function name must not be empty")
        _check(function, "function")
        if len(function) >= ARG_LIMIT:
            raise LocalProtocolError(
                f"function name of {len(function)} bytes (servers take at most {ARG_LIMIT - 1})"
            )
        if timeout_ms is not None:
            return self._out(PacketType.CAN_DO_TIMEOUT, function, str(int(timeout_ms)).encode())
        return self._out(PacketType.CAN_DO, function)

    def cant_do(self, function: bytes) -> bytes:
        """CANT_DO: the server requeues any job of ``function`` we are running."""
        return self._out(PacketType.CANT_DO, _check(function, "function"))

    def reset_abilities(self) -> bytes:
        """RESET_ABILITIES: forget every function (running ones are requeued)."""
        return self._out(PacketType.RESET_ABILITIES)

    def echo(self, data: bytes, *, tag: object = None) -> bytes:
        """ECHO_REQ; the EchoReply carries ``tag``."""
        packet = self._out(PacketType.ECHO_REQ, data)
        self._pending.append((RequestKind.ECHO, tag))
        return packet

    def option(self, name: bytes, *, tag: object = None) -> bytes:
        """OPTION_REQ; the OptionAccepted (or RequestFailed) carries ``tag``."""
        packet = self._out(PacketType.OPTION_REQ, _check(name, "option"))
        self._pending.append((RequestKind.OPTION, tag))
        return packet

    # -- grab cycle ------------------------------------------------------------------

    def grab(self, *, tag: object = None) -> bytes:
        """GRAB_JOB[_UNIQ|_ALL]; answered by JobAssigned or NoJob, carrying ``tag``."""
        packet = self._out(self._grab_type)
        self._move(self._grab_type, remote=False)
        self._grab_tag = tag
        return packet

    def pre_sleep(self) -> bytes:
        """PRE_SLEEP: ask to be woken by NOOP when a job arrives."""
        self._move(PacketType.PRE_SLEEP, remote=False)
        return self._out(PacketType.PRE_SLEEP)

    # -- results ---------------------------------------------------------------------

    def _owned(self, handle: bytes, final: bool) -> bytes:
        if handle not in self.assigned:
            raise LocalProtocolError(f"job {handle!r} is not assigned to this connection")
        if final:
            self.assigned.discard(handle)
        return handle

    def work_data(self, handle: bytes, data: bytes) -> bytes:
        """WORK_DATA: a chunk of partial output."""
        return self._out(PacketType.WORK_DATA, self._owned(handle, False), data)

    def work_warning(self, handle: bytes, data: bytes) -> bytes:
        """WORK_WARNING: a warning for the client."""
        return self._out(PacketType.WORK_WARNING, self._owned(handle, False), data)

    def work_status(self, handle: bytes, numerator: int, denominator: int) -> bytes:
        """WORK_STATUS: progress as numerator / denominator."""
        return self._out(
            PacketType.WORK_STATUS,
            self._owned(handle, False),
            str(int(numerator)).encode(),
            str(int(denominator)).encode(),
        )

    def work_complete(self, handle: bytes, data: bytes) -> bytes:
        """WORK_COMPLETE: the result; ends the job."""
        return self._out(PacketType.WORK_COMPLETE, self._owned(handle, True), data)

    def work_fail(self, handle: bytes) -> bytes:
        """WORK_FAIL: the job failed; ends it."""
        return self._out(PacketType.WORK_FAIL, self._owned(handle, True))

    def work_exception(self, handle: bytes, data: bytes) -> bytes:
        """WORK_EXCEPTION: the job raised; ends it (gearmand forwards a WORK_FAIL to
        clients that did not ask for exceptions)."""
        return self._out(PacketType.WORK_EXCEPTION, self._owned(handle, True), data)

    @property
    def pending_tags(self) -> list[object]:
        """Tags of the requests still waiting for their reply: echoes, options, the GRAB."""
        tags = [tag for _, tag in self._pending]
        if self.state is GrabState.GRABBING:
            tags.append(self._grab_tag)
        return tags

    def connection_lost(self) -> list[bytes]:
        """Mark the connection dead; return the handles we held (the server requeues them)."""
        held = sorted(self.assigned)
        self.assigned.clear()
        self._pending.clear()
        self._grab_tag = None
        self.closed = True
        self.state = GrabState.IDLE
        return held

    # -- receiving -------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[WorkerEvent]:
        """Feed bytes from the server; return the events they complete.

        Raises:
            RemoteProtocolError: bad framing, or a packet out of turn.
        """
        events: list[WorkerEvent] = []
        for packet in self._decoder.feed(data):
            assert isinstance(packet, Packet)  # allow_admin=False: never an AdminLine
            events.append(self._handle(packet))
        return events

    def _handle(self, packet: Packet) -> WorkerEvent:
        if packet.request:
            raise RemoteProtocolError(f"server sent a request packet (type {packet.type})")
        ptype, args = packet.type, packet.args
        if ptype == PacketType.NOOP:
            self._move(ptype, remote=True)
            return Noop()
        if ptype == PacketType.NO_JOB:
            self._move(ptype, remote=True)
            tag, self._grab_tag = self._grab_tag, None
            return NoJob(tag)
        if ptype in _ASSIGN_TYPES:
            self._move(ptype, remote=True)
            tag, self._grab_tag = self._grab_tag, None
            if ptype == PacketType.JOB_ASSIGN:
                job = JobAssigned(args[0], args[1], b"", args[2], b"", tag)
            elif ptype == PacketType.JOB_ASSIGN_UNIQ:
                job = JobAssigned(args[0], args[1], args[2], args[3], b"", tag)
            else:
                job = JobAssigned(args[0], args[1], args[2], args[4], args[3], tag)
            self.assigned.add(job.handle)
            return job
        if ptype == PacketType.ECHO_RES:
            return EchoReply(self._reply(RequestKind.ECHO), args[0])
        if ptype == PacketType.OPTION_RES:
            return OptionAccepted(self._reply(RequestKind.OPTION), args[0])
        if ptype == PacketType.ERROR:
            error = server_error(
                args[0].decode("utf-8", "replace"), args[1].decode("utf-8", "replace")
            )
            if error.code == "UNKNOWN_OPTION" and any(
                k is RequestKind.OPTION for k, _ in self._pending
            ):
                return RequestFailed(self._reply(RequestKind.OPTION), RequestKind.OPTION, error)
            return WorkerErrorReceived(error)
        raise RemoteProtocolError(f"a worker does not expect {PacketType(ptype).name}")

    def _reply(self, kind: RequestKind) -> object:
        for i, (k, tag) in enumerate(self._pending):
            if k is kind:
                del self._pending[i]
                return tag
        raise RemoteProtocolError(f"{kind.value} reply with no {kind.value} request pending")
