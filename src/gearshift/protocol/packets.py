"""The Gearman binary packet types and the table that drives the codec.

Every packet is a 12-byte header (magic, type, body length, all big-endian) and a
body of NUL-separated arguments.  ``PACKET_ARGS`` names the arguments of each type;
the last one takes the rest of the body, so an opaque ``data`` argument may contain
NUL bytes.  Nothing else in the codec knows a packet's layout.

The size limits each type's arguments must keep (``ARG_LIMIT``, ``PAYLOAD_TYPES``,
``BODY_LIMIT``, ``leading_args``) are here too, in one place for every reader: the
server's and ``codec.Decoder``, both ``codec.PacketReader``.  So are the layouts of the
submit types (``SUBMITS``).
"""

from __future__ import annotations

import enum
from typing import Final, NamedTuple

from gearshift.errors import PacketTooLarge

REQ: Final = b"\0REQ"
RES: Final = b"\0RES"
HEADER_SIZE: Final = 12
#: gearmand has no cap; the length field is a uint32.
MAX_PACKET_LIMIT: Final = 2**32 - 1
DEFAULT_MAX_PACKET_SIZE: Final = 2**30


class PacketType(enum.IntEnum):
    """Packet type numbers as gearmand and libgearman use them."""

    CAN_DO = 1
    CANT_DO = 2
    RESET_ABILITIES = 3
    PRE_SLEEP = 4
    UNUSED = 5
    NOOP = 6
    SUBMIT_JOB = 7
    JOB_CREATED = 8
    GRAB_JOB = 9
    NO_JOB = 10
    JOB_ASSIGN = 11
    WORK_STATUS = 12
    WORK_COMPLETE = 13
    WORK_FAIL = 14
    GET_STATUS = 15
    ECHO_REQ = 16
    ECHO_RES = 17
    SUBMIT_JOB_BG = 18
    ERROR = 19
    STATUS_RES = 20
    SUBMIT_JOB_HIGH = 21
    SET_CLIENT_ID = 22
    CAN_DO_TIMEOUT = 23
    ALL_YOURS = 24
    WORK_EXCEPTION = 25
    OPTION_REQ = 26
    OPTION_RES = 27
    WORK_DATA = 28
    WORK_WARNING = 29
    GRAB_JOB_UNIQ = 30
    JOB_ASSIGN_UNIQ = 31
    SUBMIT_JOB_HIGH_BG = 32
    SUBMIT_JOB_LOW = 33
    SUBMIT_JOB_LOW_BG = 34
    SUBMIT_JOB_SCHED = 35
    SUBMIT_JOB_EPOCH = 36
    SUBMIT_REDUCE_JOB = 37
    SUBMIT_REDUCE_JOB_BACKGROUND = 38
    GRAB_JOB_ALL = 39
    JOB_ASSIGN_ALL = 40
    GET_STATUS_UNIQUE = 41
    STATUS_RES_UNIQUE = 42


#: The highest packet type number; anything above (or 0) is not Gearman.
MAX_PACKET_TYPE: Final = 42

_SUBMIT = ("function", "unique", "data")
_REDUCE = ("function", "unique", "reducer", "aggregator", "data")

#: Argument names per packet type.  The last argument takes the rest of the body.
PACKET_ARGS: Final[dict[PacketType, tuple[str, ...]]] = {
    PacketType.CAN_DO: ("function",),
    PacketType.CANT_DO: ("function",),
    PacketType.RESET_ABILITIES: (),
    PacketType.PRE_SLEEP: (),
    PacketType.UNUSED: (),
    PacketType.NOOP: (),
    PacketType.SUBMIT_JOB: _SUBMIT,
    PacketType.JOB_CREATED: ("handle",),
    PacketType.GRAB_JOB: (),
    PacketType.NO_JOB: (),
    PacketType.JOB_ASSIGN: ("handle", "function", "data"),
    PacketType.WORK_STATUS: ("handle", "numerator", "denominator"),
    PacketType.WORK_COMPLETE: ("handle", "data"),
    PacketType.WORK_FAIL: ("handle",),
    PacketType.GET_STATUS: ("handle",),
    PacketType.ECHO_REQ: ("data",),
    PacketType.ECHO_RES: ("data",),
    PacketType.SUBMIT_JOB_BG: _SUBMIT,
    PacketType.ERROR: ("code", "text"),
    PacketType.STATUS_RES: ("handle", "known", "running", "numerator", "denominator"),
    PacketType.SUBMIT_JOB_HIGH: _SUBMIT,
    PacketType.SET_CLIENT_ID: ("client_id",),
    PacketType.CAN_DO_TIMEOUT: ("function", "timeout"),
    PacketType.ALL_YOURS: (),
    PacketType.WORK_EXCEPTION: ("handle", "data"),
    PacketType.OPTION_REQ: ("option",),
    PacketType.OPTION_RES: ("option",),
    PacketType.WORK_DATA: ("handle", "data"),
    PacketType.WORK_WARNING: ("handle", "data"),
    PacketType.GRAB_JOB_UNIQ: (),
    PacketType.JOB_ASSIGN_UNIQ: ("handle", "function", "unique", "data"),
    PacketType.SUBMIT_JOB_HIGH_BG: _SUBMIT,
    PacketType.SUBMIT_JOB_LOW: _SUBMIT,
    PacketType.SUBMIT_JOB_LOW_BG: _SUBMIT,
    PacketType.SUBMIT_JOB_SCHED: (
        "function",
        "unique",
        "minute",
        "hour",
        "mday",
        "month",
        "wday",
        "data",
    ),
    PacketType.SUBMIT_JOB_EPOCH: ("function", "unique", "epoch", "data"),
    PacketType.SUBMIT_REDUCE_JOB: _REDUCE,
    PacketType.SUBMIT_REDUCE_JOB_BACKGROUND: _REDUCE,
    PacketType.GRAB_JOB_ALL: (),
    PacketType.JOB_ASSIGN_ALL: ("handle", "function", "unique", "reducer", "data"),
    PacketType.GET_STATUS_UNIQUE: ("unique",),
    PacketType.STATUS_RES_UNIQUE: (
        "unique",
        "known",
        "running",
        "numerator",
        "denominator",
        "waiting",
    ),
}

#: Number of arguments per type number, indexed by the raw integer (0 unused).
ARGC: Final[tuple[int, ...]] = (0, *(len(PACKET_ARGS[PacketType(i)]) for i in range(1, 43)))

#: The longest body of a packet without a payload, and one more than the longest
#: argument before a payload.  gearmand reads each connection into an 8 KiB buffer and
#: parses arguments in place: a body (of a type without a payload) or an argument
#: (before a payload) that does not fit is never completed, and gearmand drops the
#: connection.  Measured against gearmand 1.1.20: CAN_DO, SET_CLIENT_ID and OPTION_REQ
#: are served with an 8192-byte body and dropped at 8193; SUBMIT_JOB_BG is accepted
#: with an 8191-byte function name and dropped at 8192.  A reader that enforces this as
#: soon as a header arrives never reserves memory for a size nobody can legitimately
#: send; only payloads may be large.
ARG_LIMIT: Final = 8192

#: Types whose last argument is an opaque payload (gearmand's "data" packets): job
#: arguments, results, echoes.  Only the payload may be large (up to the configured
#: maximum packet size); each argument before it must be shorter than ``ARG_LIMIT``.
PAYLOAD_TYPES: Final = frozenset(
    t for t, names in PACKET_ARGS.items() if names and names[-1] == "data"
)

#: The largest body per type number (0 unused): ``ARG_LIMIT`` for every type without a
#: payload (handles, function names, options, counters: small by nature), the protocol's
#: own limit for payload types (the configured maximum packet size applies to those).
#: Unlike gearmand, which skips the body of a type without arguments (GRAB_JOB, NOOP...),
#: and accepts a multi-argument type (WORK_STATUS) whose arguments each fit its buffer,
#: the whole body of every such type is held to ``ARG_LIMIT``: no client sends more.
BODY_LIMIT: Final[tuple[int, ...]] = (
    0,
    *(
        MAX_PACKET_LIMIT if PacketType(i) in PAYLOAD_TYPES else ARG_LIMIT
        for i in range(1, MAX_PACKET_TYPE + 1)
    ),
)


def leading_args(
    buf: bytes | bytearray, ptype: int, size: int, start: int, end: int
) -> tuple[list[bytes], int] | None:
    """Check a body larger than ``ARG_LIMIT`` against its type's limits.

    ``buf[start:end]`` is the part of the body at hand (all of it, or its beginning
    while it arrives), ``size`` the body length its header announced.  Returns the
    arguments before the payload and where the payload starts in ``buf``; None while
    they have not all arrived (or, in a complete body, when one lacks its NUL: the
    caller's split reports that).

    A reader calls this only for bodies above ``ARG_LIMIT`` (a smaller one cannot
    break a limit), as soon as the header is there and again as more arrives, so an
    offender is refused before its body is waited for, let alone stored.

    Raises:
        PacketTooLarge: the type has no payload and ``size`` exceeds ``ARG_LIMIT``, or
            an argument before the payload does not end within ``ARG_LIMIT`` bytes.
    """
    if size > BODY_LIMIT[ptype]:
        raise PacketTooLarge(
            f"{PacketType(ptype).name} body of {size} bytes exceeds {BODY_LIMIT[ptype]}"
        )
    heads: list[bytes] = []
    at = start
    names = PACKET_ARGS[PacketType(ptype)]
    for name in names[:-1]:
        window = at + ARG_LIMIT
        nul = buf.find(b"\0", at, window if window < end else end)
        if nul < 0:
            if window <= end:
                raise PacketTooLarge(
                    f"{PacketType(ptype).name} of {size} bytes: its {name} argument is"
                    f" longer than {ARG_LIMIT - 1} bytes"
                )
            return None
        heads.append(bytes(buf[at:nul]))
        at = nul + 1
    return heads, at


#: Types a client or worker sends to the server (``\0REQ``).
REQUEST_TYPES: Final = frozenset(
    {
        PacketType.CAN_DO,
        PacketType.CANT_DO,
        PacketType.RESET_ABILITIES,
        PacketType.PRE_SLEEP,
        PacketType.SUBMIT_JOB,
        PacketType.GRAB_JOB,
        PacketType.WORK_STATUS,
        PacketType.WORK_COMPLETE,
        PacketType.WORK_FAIL,
        PacketType.GET_STATUS,
        PacketType.ECHO_REQ,
        PacketType.SUBMIT_JOB_BG,
        PacketType.SUBMIT_JOB_HIGH,
        PacketType.SET_CLIENT_ID,
        PacketType.CAN_DO_TIMEOUT,
        PacketType.ALL_YOURS,
        PacketType.WORK_EXCEPTION,
        PacketType.OPTION_REQ,
        PacketType.WORK_DATA,
        PacketType.WORK_WARNING,
        PacketType.GRAB_JOB_UNIQ,
        PacketType.SUBMIT_JOB_HIGH_BG,
        PacketType.SUBMIT_JOB_LOW,
        PacketType.SUBMIT_JOB_LOW_BG,
        PacketType.SUBMIT_JOB_SCHED,
        PacketType.SUBMIT_JOB_EPOCH,
        PacketType.SUBMIT_REDUCE_JOB,
        PacketType.SUBMIT_REDUCE_JOB_BACKGROUND,
        PacketType.GRAB_JOB_ALL,
        PacketType.GET_STATUS_UNIQUE,
    }
)

#: Types the server sends (``\0RES``).  WORK_* appear in both directions.
RESPONSE_TYPES: Final = frozenset(
    {
        PacketType.NOOP,
        PacketType.JOB_CREATED,
        PacketType.NO_JOB,
        PacketType.JOB_ASSIGN,
        PacketType.WORK_STATUS,
        PacketType.WORK_COMPLETE,
        PacketType.WORK_FAIL,
        PacketType.ECHO_RES,
        PacketType.ERROR,
        PacketType.STATUS_RES,
        PacketType.WORK_EXCEPTION,
        PacketType.OPTION_RES,
        PacketType.WORK_DATA,
        PacketType.WORK_WARNING,
        PacketType.JOB_ASSIGN_UNIQ,
        PacketType.JOB_ASSIGN_ALL,
        PacketType.STATUS_RES_UNIQUE,
    }
)


class Priority(enum.IntEnum):
    """Job priority; the numbers are gearmand's persistent-queue encoding."""

    HIGH = 0
    NORMAL = 1
    LOW = 2


class SubmitLayout(NamedTuple):
    """What a submit packet asks for, and where its arguments are.

    Every submit starts with the function and the unique; the other positions are
    argument indexes, 0 when the type has no such argument (index 0 is always the
    function, so 0 can mean "none").
    """

    priority: Priority
    background: bool
    #: Index of the epoch time (SUBMIT_JOB_EPOCH), or 0.
    epoch: int
    #: Index of the reducer (SUBMIT_REDUCE_JOB*), or 0.  The aggregator after it is
    #: accepted and ignored, as gearmand does.
    reducer: int
    #: Index of the payload: always the last argument.
    data: int


#: The submit types the server accepts, and their layouts: the one place that knows
#: them (the scheduler's submit handlers, the durable submit path and the HTTP gateway
#: read it).  SUBMIT_JOB_SCHED is not here: gearmand answers it "Command not expected",
#: and so does gearshift.
SUBMITS: Final[dict[PacketType, SubmitLayout]] = {
    PacketType.SUBMIT_JOB: SubmitLayout(Priority.NORMAL, False, 0, 0, 2),
    PacketType.SUBMIT_JOB_HIGH: SubmitLayout(Priority.HIGH, False, 0, 0, 2),
    PacketType.SUBMIT_JOB_LOW: SubmitLayout(Priority.LOW, False, 0, 0, 2),
    PacketType.SUBMIT_JOB_BG: SubmitLayout(Priority.NORMAL, True, 0, 0, 2),
    PacketType.SUBMIT_JOB_HIGH_BG: SubmitLayout(Priority.HIGH, True, 0, 0, 2),
    PacketType.SUBMIT_JOB_LOW_BG: SubmitLayout(Priority.LOW, True, 0, 0, 2),
    PacketType.SUBMIT_JOB_EPOCH: SubmitLayout(Priority.NORMAL, True, 2, 0, 3),
    PacketType.SUBMIT_REDUCE_JOB: SubmitLayout(Priority.NORMAL, False, 0, 2, 4),
    PacketType.SUBMIT_REDUCE_JOB_BACKGROUND: SubmitLayout(Priority.NORMAL, True, 0, 2, 4),
}

#: (priority, background) -> the plain submit packet that asks for it.
SUBMIT_TYPES: Final[dict[tuple[Priority, bool], PacketType]] = {
    (layout.priority, layout.background): ptype
    for ptype, layout in SUBMITS.items()
    if not layout.epoch and not layout.reducer
}
