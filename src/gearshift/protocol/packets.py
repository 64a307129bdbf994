"""The Gearman binary packet types and the table that drives the codec.

Every packet is a 12-byte header (magic, type, body length, all big-endian) and a
body of NUL-separated arguments.  ``PACKET_ARGS`` names the arguments of each type;
the last one takes the rest of the body, so an opaque ``data`` argument may contain
NUL bytes.  Nothing else in the codec knows a packet's layout.
"""

from __future__ import annotations

import enum
from typing import Final

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


#: (priority, background) -> the submit packet that asks for it.
SUBMIT_TYPES: Final[dict[tuple[Priority, bool], PacketType]] = {
    (Priority.NORMAL, False): PacketType.SUBMIT_JOB,
    (Priority.HIGH, False): PacketType.SUBMIT_JOB_HIGH,
    (Priority.LOW, False): PacketType.SUBMIT_JOB_LOW,
    (Priority.NORMAL, True): PacketType.SUBMIT_JOB_BG,
    (Priority.HIGH, True): PacketType.SUBMIT_JOB_HIGH_BG,
    (Priority.LOW, True): PacketType.SUBMIT_JOB_LOW_BG,
}
