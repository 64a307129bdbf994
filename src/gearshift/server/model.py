"""The scheduler's data: peers, functions, jobs and counters, with no behaviour.

A job's lifecycle is one explicit state (``JobState``) instead of a handful of flags,
and ``TRANSITIONS`` is the one table of the moves between states that are legal.  The
scheduler assigns ``job.state`` directly (no check on the per-job path); a scheduler
built with ``job_type=CheckedJob`` checks every assignment against the table, which is
how the tests (and anyone debugging) catch an illegal move where it happens.

Whether anybody still wants a job is part of its state: a job whose clients all left,
or that an admin cancelled, is ``IGNORED``.  It stays where it was (a queue, the epoch
heap, a pending store write, a worker) until it is reached there, and then it goes, as
gearmand's lazy deletion does; where it is, is told by the container that holds it
(``worker`` for a running one).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

from gearshift.protocol.packets import MAX_PACKET_TYPE
from gearshift.records import StoredJob

HIGH: Final = 0
NORMAL: Final = 1
LOW: Final = 2

MAX_UNIQUE: Final = 64
MAX_HANDLE: Final = 64
MAX_CLIENT_ID: Final = 127


class JobState(enum.IntEnum):
    """Where a job is in its life."""

    #: Created, not queued yet: a durable job waits here for the store to take it.
    PENDING = 0
    #: In its function's priority queue, waiting for a worker.
    QUEUED = 1
    #: An epoch job not due yet, waiting in the epoch heap.
    DELAYED = 2
    #: Handed to a worker (``job.worker``).
    RUNNING = 3
    #: Nobody waits for it any more: dropped where it is when that place reaches it.
    IGNORED = 4
    #: Forgotten by the scheduler; no table holds it.
    GONE = 5


_S = JobState

#: Every legal move: state -> the states a job in it may go to.
TRANSITIONS: Final[dict[JobState, frozenset[JobState]]] = {
    # Queued (or delayed) when created or made durable; ignored when its clients leave
    # meanwhile; gone when the store refuses it, or it is left there while draining.
    _S.PENDING: frozenset({_S.QUEUED, _S.DELAYED, _S.IGNORED, _S.GONE}),
    # Handed out; ignored; withdrawn (cluster fencing, draining).
    _S.QUEUED: frozenset({_S.RUNNING, _S.IGNORED, _S.GONE}),
    # Due; ignored; withdrawn.
    _S.DELAYED: frozenset({_S.QUEUED, _S.IGNORED, _S.GONE}),
    # Its worker left (requeued); ignored while it runs; finished, out of retries or
    # left in the store by a drain.
    _S.RUNNING: frozenset({_S.QUEUED, _S.IGNORED, _S.GONE}),
    # Reached where it waited: reaped from a queue, finished or lost by its worker,
    # or its store write settled.
    _S.IGNORED: frozenset({_S.GONE}),
    _S.GONE: frozenset(),
}


# Module globals: an enum class attribute costs a slow lookup, too slow for the per-job
# path.
_PENDING: Final = JobState.PENDING
_IGNORED: Final = JobState.IGNORED
_GONE: Final = JobState.GONE


class IllegalTransition(AssertionError):
    """A job was moved between states that ``TRANSITIONS`` does not connect."""


def check_transition(old: JobState, new: JobState) -> None:
    """Raise ``IllegalTransition`` unless ``old -> new`` is in ``TRANSITIONS``."""
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(f"job state {old.name} -> {new.name} is not allowed")


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Peer:
    """One connection as the scheduler sees it: a client, a worker, or both.

    ``out`` collects encoded replies; ``flush`` (overridden by the connection) sends them.
    """

    __slots__ = (
        "out",
        "host",
        "fd",
        "client_id",
        "exceptions",
        "abilities",
        "funcs",
        "timeouts",
        "sleeping",
        "noop_sent",
        "sleep_seq",
        "jobs",
        "listening",
        "closed",
        "identity",
    )

    def __init__(self, host: str = "-", fd: int = -1, *, exceptions: bool = False) -> None:
        self.out: list[bytes] = []
        self.host = host
        self.fd = fd
        self.client_id = b"-"
        self.exceptions = exceptions
        #: Every CAN_DO in order, duplicates kept (``workers`` prints them newest first).
        self.abilities: list[Function] = []
        #: Distinct functions in GRAB order: newest first, rotated as they yield jobs.
        self.funcs: list[Function] = []
        #: CAN_DO_TIMEOUT milliseconds per function.
        self.timeouts: dict[Function, int] = {}
        self.sleeping = False
        self.noop_sent = False
        self.sleep_seq = 0
        #: Jobs it is running as a worker, in grab order (a dict as an ordered set): a lost
        #: worker's jobs are requeued newest first, as gearmand walks its list.
        self.jobs: dict[Job, None] = {}
        #: Foreground jobs this peer waits on (as a client).
        self.listening: set[Job] = set()
        self.closed = False
        #: Verified TLS client certificate name, for the access rules.
        self.identity: str | None = None

    def flush(self) -> None:
        """Send ``out``; the connection overrides this.  Tests read ``out`` directly."""


class Function:
    """Per-function queues and counters."""

    __slots__ = (
        "name",
        "queues",
        "total",
        "running",
        "workers",
        "sleepers",
        "maxqueue",
        "delayed",
    )

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.queues: tuple[deque[Job], deque[Job], deque[Job]] = (deque(), deque(), deque())
        #: Jobs that exist for this function: queued, running, delayed, ignored-not-reaped.
        self.total = 0
        self.running = 0
        #: Number of CAN_DO registrations (a duplicate CAN_DO counts twice, as in gearmand).
        self.workers = 0
        #: (peer, sleep cycle) of workers that slept and were not woken yet; stale
        #: entries are skipped when popped and compacted when the deque grows.
        self.sleepers: deque[tuple[Peer, int]] = deque()
        self.maxqueue = [0, 0, 0]
        #: Epoch jobs per priority that are not due yet (they wait in the heap).
        self.delayed = [0, 0, 0]

    @property
    def idle(self) -> bool:
        """No workers, no jobs, no maxqueue set: safe to forget."""
        return not (self.total or self.workers or any(self.maxqueue))

    def queued(self, priority: int) -> int:
        return len(self.queues[priority]) + self.delayed[priority]


class Job:
    """One job.  ``__slots__`` keeps a queued background job small: its flags are one
    ``state``."""

    __slots__ = (
        "handle",
        "func",
        "unique",
        "data",
        "priority",
        "background",
        "when",
        "reducer",
        "clients",
        "worker",
        "numerator",
        "denominator",
        "retries",
        "state",
        "stored",
        "timer",
        "key",
        "created",
        "started",
    )

    def __init__(
        self,
        handle: bytes,
        func: Function,
        unique: bytes,
        data: bytes,
        priority: int,
        background: bool,
        when: int,
        reducer: bytes,
    ) -> None:
        self.handle = handle
        self.func = func
        self.unique = unique
        self.data = data
        self.priority = priority
        self.background = background
        self.when = when
        self.reducer = reducer
        self.clients: list[Peer] = []
        self.worker: Peer | None = None
        self.numerator = b"0"
        self.denominator = b"0"
        self.retries = 0
        self.state = _PENDING
        #: The store's record, while the job is in the persistent queue.
        self.stored: StoredJob | None = None
        self.timer: TimerHandle | None = None
        #: (function, payload) for a job with the unique ``-``, its key in
        #: ``Scheduler.payload_uniques``; None otherwise.
        self.key: tuple[bytes, bytes] | None = None
        #: Wall-clock times set by a JobObserver (metrics), 0.0 otherwise.
        self.created = 0.0
        self.started = 0.0

    # Read-only views of the state, under the names the admin output, the HTTP views
    # and the tests use.

    @property
    def pending(self) -> bool:
        """Created, waiting for the store to make it durable (not queued yet)."""
        return self.state is _PENDING

    @property
    def ignore(self) -> bool:
        """Nobody waits for it: dropped when reached (gearmand's ``ignore_job``)."""
        return self.state is _IGNORED

    @property
    def alive(self) -> bool:
        """Still known to the scheduler."""
        return self.state is not _GONE

    @property
    def queued_flag(self) -> bool:
        """gearmand's ``job_queued``: a background job still in the persistent queue
        (the QUEUED column of ``show jobs``); an ignored (or cancelled) one is not."""
        return self.background and self.state is not _IGNORED

    def __repr__(self) -> str:
        return f"<Job {self.handle!r} {self.func.name!r} {self.state.name} prio={self.priority}>"


#: The slot's descriptor, which CheckedJob's property shadows.
_STATE_SLOT: Any = vars(Job)["state"]


class CheckedJob(Job):
    """A ``Job`` whose every state assignment is checked against ``TRANSITIONS``.

    Costs a Python call per move, so only tests and debugging use it
    (``Scheduler(job_type=CheckedJob)``).
    """

    __slots__ = ()

    @property
    def state(self) -> JobState:
        state: JobState = _STATE_SLOT.__get__(self, Job)
        return state

    @state.setter
    def state(self, new: JobState) -> None:
        try:
            old = _STATE_SLOT.__get__(self, Job)
        except AttributeError:  # the constructor's first assignment
            if new is not _PENDING:
                raise IllegalTransition(f"a job starts PENDING, not {new.name}") from None
        else:
            check_transition(old, new)
        _STATE_SLOT.__set__(self, new)


class Stats:
    """Cheap counters for metrics: O(1) per packet."""

    __slots__ = ("submitted", "finished", "packets")

    def __init__(self) -> None:
        self.submitted: dict[bytes, int] = {}
        #: (function, "complete" | "fail" | "exception") -> count
        self.finished: dict[tuple[bytes, str], int] = {}
        #: Packets received, indexed by packet type number (0 = admin lines).
        self.packets: list[int] = [0] * (MAX_PACKET_TYPE + 1)


#: A packet's arguments (a list on the hot path, a tuple from the codec).
Args = Sequence[bytes]
Handler = Callable[[Peer, Args], None]


__all__ = [
    "HIGH",
    "LOW",
    "MAX_CLIENT_ID",
    "MAX_HANDLE",
    "MAX_UNIQUE",
    "NORMAL",
    "TRANSITIONS",
    "Args",
    "CheckedJob",
    "Function",
    "Handler",
    "IllegalTransition",
    "Job",
    "JobState",
    "Peer",
    "Stats",
    "TimerHandle",
    "check_transition",
]
