"""gearshift's exceptions: one tree, so ``except GearmanError`` catches them all.

::

    GearmanError
    ├── ProtocolError
    │   ├── LocalProtocolError           we were about to send something invalid
    │   └── RemoteProtocolError          the peer sent something invalid
    │       ├── InvalidMagic             neither \\0REQ nor \\0RES
    │       ├── UnknownPacketType        type 0 or above 42
    │       ├── PacketTooLarge           body or argument longer than its limit
    │       ├── MalformedPacket          too few NUL-separated arguments
    │       └── AdminLineTooLong         a text line with no newline in sight
    ├── NetworkError
    │   ├── ConnectError
    │   │   └── ServerUnavailable        no configured server could be reached
    │   ├── ConnectionLost               the peer went away (after JOB_CREATED: never resent)
    │   └── WriteError
    ├── GearmanTimeout                   also a builtin TimeoutError
    │   ├── ConnectTimeout
    │   ├── PoolTimeout
    │   └── JobTimeout
    ├── ResourceError
    │   ├── ClosedError                  used after close()
    │   └── BusyError                    concurrent use of something that allows one user
    ├── ServerError                      an ERROR packet or an ``ERR`` admin reply
    │   ├── QueueFull                    QUEUE_ERROR "Job queue is full"
    │   ├── QueueError                   QUEUE_ERROR for a failing persistent store
    │   ├── UnknownJob                   JOB_NOT_FOUND / UNKNOWN_JOB
    │   ├── UnknownOption                UNKNOWN_OPTION
    │   ├── ArgumentTooLarge             ARGUMENT_TOO_LARGE
    │   ├── InvalidCommand               INVALID_COMMAND / INVALID_MAGIC / UNKNOWN_COMMAND
    │   ├── InvalidArguments             INVALID_ARGUMENTS
    │   └── ServerDraining               SHUTDOWN_GRACEFUL: the server is shutting down
    ├── JobError
    │   ├── JobFailed                    WORK_FAIL
    │   └── JobException                 WORK_EXCEPTION, carrying its payload
    ├── StoreError                       the durable queue failed
    └── ConfigError                      bad command line or config file
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping


class GearmanError(Exception):
    """The root of every gearshift exception."""


class ProtocolError(GearmanError):
    """Bytes that do not follow the Gearman protocol."""


class LocalProtocolError(ProtocolError):
    """We were asked to send something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""


class InvalidMagic(RemoteProtocolError):
    """A binary packet whose magic is neither ``\\0REQ`` nor ``\\0RES``."""


class UnknownPacketType(RemoteProtocolError):
    """A packet type number gearmand does not know (0, 5 aside, or above 42)."""


class PacketTooLarge(RemoteProtocolError):
    """A packet body larger than the configured maximum, or than its type allows
    (``protocol.packets.ARG_LIMIT``), or an argument before a payload that long."""


class MalformedPacket(RemoteProtocolError):
    """A body with fewer NUL-separated arguments than its type needs."""


class AdminLineTooLong(RemoteProtocolError):
    """An admin text line that grew past the limit without a newline."""


class NetworkError(GearmanError):
    """A connection could not be made or was lost."""


class ConnectError(NetworkError):
    """Connecting to a server failed."""


class ServerUnavailable(ConnectError):
    """None of the configured servers could be reached."""


class ConnectionLost(NetworkError):
    """The connection dropped; jobs already created are not resubmitted."""


class WriteError(NetworkError):
    """Writing to the connection failed."""


class GearmanTimeout(GearmanError, TimeoutError):
    """Something took longer than its timeout."""


class ConnectTimeout(GearmanTimeout):
    """Connecting took longer than ``connect_timeout``."""


class PoolTimeout(GearmanTimeout):
    """Waiting for a pooled connection took too long."""


class JobTimeout(GearmanTimeout):
    """A job did not finish within its ``timeout``."""


class ResourceError(GearmanError):
    """An object was used in a state that does not allow it."""


class ClosedError(ResourceError):
    """The object was closed."""


class BusyError(ResourceError):
    """The object is already in use by someone else."""


class ServerError(GearmanError):
    """The server answered with an ERROR packet or an ``ERR`` admin reply."""

    def __init__(self, code: str, text: str = "") -> None:
        super().__init__(f"{code}: {text}" if text else code)
        self.code = code
        self.text = text


class QueueFull(ServerError):
    """The function's queue is at its ``maxqueue`` limit."""


class QueueError(ServerError):
    """The server could not store the job in its persistent queue."""


class UnknownJob(ServerError):
    """The server does not know the job handle."""


class UnknownOption(ServerError):
    """The server does not know the option."""


class ArgumentTooLarge(ServerError):
    """An argument (unique id, handle, ...) is too long."""


class InvalidCommand(ServerError):
    """The server does not accept that command."""


class InvalidArguments(ServerError):
    """The command was given arguments the server refuses (an admin command's
    wrong arguments, an epoch time out of range)."""


class ServerDraining(ServerError):
    """The server is shutting down gracefully and takes no new jobs.

    Nothing was queued: the client tries the job on its next server.
    """


#: ERROR codes (gearmand's ``gearman_strerror`` names minus ``GEARMAN_``) -> exception class.
SERVER_ERRORS: Mapping[str, type[ServerError]] = {
    "QUEUE_ERROR": QueueError,
    "JOB_NOT_FOUND": UnknownJob,
    "UNKNOWN_JOB": UnknownJob,
    "UNKNOWN_OPTION": UnknownOption,
    "ARGUMENT_TOO_LARGE": ArgumentTooLarge,
    "INVALID_COMMAND": InvalidCommand,
    "INVALID_MAGIC": InvalidCommand,
    "UNKNOWN_COMMAND": InvalidCommand,
    "INVALID_ARGUMENTS": InvalidArguments,
    "SHUTDOWN_GRACEFUL": ServerDraining,
}


def server_error(code: str, text: str = "") -> ServerError:
    """Build the most specific ServerError for an ERROR packet or ``ERR`` reply."""
    if code == "QUEUE_ERROR" and text == "Job queue is full":
        return QueueFull(code, text)
    return SERVER_ERRORS.get(code, ServerError)(code, text)


class JobError(GearmanError):
    """A job ended without a result."""

    def __init__(self, handle: bytes | str, message: str = "") -> None:
        self.handle = handle.decode() if isinstance(handle, bytes) else handle
        super().__init__(message or f"job {self.handle} failed")


class JobFailed(JobError):
    """The worker sent WORK_FAIL (or the server gave up after ``--job-retries``)."""


class JobException(JobError):
    """The worker sent WORK_EXCEPTION; ``payload`` holds what it said."""

    def __init__(self, handle: bytes | str, payload: bytes) -> None:
        self.payload = payload
        text = payload.decode("utf-8", "replace")
        super().__init__(handle, f"job {handle!r} raised: {text}")


class StoreError(GearmanError):
    """The persistent queue could not do what was asked."""


class ConfigError(GearmanError):
    """A bad option on the command line or in a config file."""


@contextlib.contextmanager
def map_exceptions(mapping: Mapping[type[BaseException], type[GearmanError]]) -> Iterator[None]:
    """Re-raise foreign exceptions (OSError, sqlite3, asyncpg, ...) as gearshift ones.

    The first matching entry wins; the original exception is kept as ``__cause__``.
    """
    try:
        yield
    except Exception as exc:
        for source, target in mapping.items():
            if isinstance(exc, source):
                raise target(str(exc) or type(exc).__name__) from exc
        raise
