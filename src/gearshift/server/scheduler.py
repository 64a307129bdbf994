"""The scheduler: policy over the model, no I/O.

How it works.  Every packet a connection reads becomes one call
``Scheduler.dispatch[type](peer, args)``; replies are appended to ``peer.out`` as encoded
bytes and the peer is put on ``Scheduler.dirty`` so that the connection layer writes
everything one batch produced with a single ``write``.  Time comes from an injected wall
clock and timers from an injected ``Timers`` object, so tests drive it with plain calls.
It imports nothing of asyncio or of the stores: records are ``gearshift.records``'.

What it decides: the dispatch table (the submit handlers read their argument layouts
from ``packets.SUBMITS``), submits and coalescing, abilities and the wakeups of sleeping
workers (``wakeups``), results and status, the drain for shutdown and the withdrawal of
stored jobs (cluster fencing), forgetting idle functions, compacting its tables.  The
data it works on (``Peer``, ``Function``, ``Job`` and its states) is ``model``'s;
every encoded reply comes from ``protocol.codec``.

Data layout (all lookups O(1) per packet, independent of queue depth and of idle
workers of other functions):

* ``functions``: name -> ``Function`` holding three FIFO deques (HIGH, NORMAL, LOW), the
  job counters ``status`` prints, the maxqueue limits and a deque of sleeping workers.
* ``handles``: handle -> ``Job``; ``uniques``: coalescing key -> ``Job``, where the key is
  ``(function, unique)``, or ``(function, b"-", payload)`` for the unique ``-``.
* Epoch jobs that are not due yet wait in one heap with one timer armed for the
  earliest; when due they join the tail of their priority queue and wake a sleeper.
* A job whose clients all left, or that an admin cancelled, is ``IGNORED`` and stays
  queued until a GRAB reaches it (lazy deletion, as gearmand does).

Semantics follow gearmand 2.0 where it differs from 1.1.20: priority is global across a
worker's functions (HIGH of any function before NORMAL of any), functions take turns
round-robin, epoch jobs are woken by a timer, one CAN_DO_TIMEOUT timer per assigned job,
``job_retries`` -1 = unlimited, 0 = fail on the first lost worker, N = N retries.
Sleeping workers are woken one per new job (``worker_wakeup`` per job; 0 = all).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import sys
from collections.abc import Callable
from typing import Final, Protocol

from gearshift.protocol.codec import (
    ERRORS,
    LARGE_PAYLOAD,
    encode_header,
    encode_response,
    pack_header,
    response_parts,
)
from gearshift.protocol.packets import RES, SUBMITS, PacketType, Priority
from gearshift.records import StoredJob
from gearshift.server.model import (
    HIGH,
    LOW,
    MAX_CLIENT_ID,
    MAX_HANDLE,
    MAX_UNIQUE,
    NORMAL,
    Args,
    Function,
    Handler,
    Job,
    JobState,
    Peer,
    Stats,
    TimerHandle,
)
from gearshift.server.wakeups import Wakeups

logger = logging.getLogger(__name__)

#: CAN_DO_TIMEOUT never fires sooner than this, as in gearmand.
MIN_TIMEOUT_MS: Final = 1000
#: ...and a longer one is cut to this (2**31 - 1 ms, about 24.8 days).
MAX_TIMEOUT_MS: Final = 2**31 - 1

_T = PacketType
NOOP_PACKET: Final = encode_header(_T.NOOP, 0)
NO_JOB_PACKET: Final = encode_header(_T.NO_JOB, 0)

# The per-job packets are built inline from codec's header packer: a module global is
# cheaper than an enum attribute lookup, and struct packs an int without __index__.
_pack_header = pack_header
_JOB_CREATED: Final = int(_T.JOB_CREATED)
_JOB_ASSIGN: Final = int(_T.JOB_ASSIGN)
_WORK_COMPLETE: Final = int(_T.WORK_COMPLETE)
_packet = encode_response
_parts = response_parts

# The states, as module globals for the per-job path.
_PENDING: Final = JobState.PENDING
_QUEUED: Final = JobState.QUEUED
_DELAYED: Final = JobState.DELAYED
_RUNNING: Final = JobState.RUNNING
_IGNORED: Final = JobState.IGNORED
_GONE: Final = JobState.GONE

#: ``Scheduler.compact`` leaves tables smaller than this alone...
_COMPACT_MIN_BYTES: Final = 256 * 1024
#: ...and rebuilds larger ones holding fewer entries than size / this (8x emptier than
#: a full table, whose entries cost ~40 bytes each).
_COMPACT_BYTES_PER_ENTRY: Final = 320

ERR_NOT_EXPECTED: Final = ERRORS["NOT_EXPECTED"]
ERR_MAGIC: Final = ERRORS["MAGIC"]
ERR_UNIQUE_TOO_LARGE: Final = ERRORS["UNIQUE_TOO_LARGE"]
ERR_HANDLE_TOO_LARGE: Final = ERRORS["HANDLE_TOO_LARGE"]
ERR_QUEUE_FULL: Final = ERRORS["QUEUE_FULL"]
ERR_UNKNOWN_OPTION: Final = ERRORS["UNKNOWN_OPTION"]
ERR_NOT_FOUND_DATA: Final = ERRORS["NOT_FOUND_DATA"]
ERR_NOT_FOUND_RESULT: Final = ERRORS["NOT_FOUND_RESULT"]
ERR_NOT_FOUND_EXCEPTION: Final = ERRORS["NOT_FOUND_EXCEPTION"]
ERR_BAD_EPOCH: Final = ERRORS["BAD_EPOCH"]
ERR_DRAINING: Final = ERRORS["DRAINING"]
ERR_PERMISSION_DENIED: Final = ERRORS["PERMISSION_DENIED"]


def atoi(text: bytes) -> int:
    """C ``atoi``/``strtoll``: optional sign and leading digits; anything else is 0."""
    text = text.strip()
    end = 1 if text[:1] in (b"-", b"+") else 0
    while end < len(text) and 48 <= text[end] <= 57:
        end += 1
    try:
        return int(text[:end])
    except ValueError:
        return 0


INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1


def strtoll(text: bytes) -> int | None:
    """C ``strtoll`` as gearmand reads an epoch: like ``atoi``, but ``None`` when the
    number does not fit in a signed 64-bit integer (``ERANGE``)."""
    text = text.strip()
    end = 1 if text[:1] in (b"-", b"+") else 0
    while end < len(text) and 48 <= text[end] <= 57:
        end += 1
    digits = text[:end].lstrip(b"+-").lstrip(b"0")
    if len(digits) > 19:  # also keeps int() off huge digit strings
        return None
    try:
        value = int(text[:end])
    except ValueError:
        return 0
    return value if INT64_MIN <= value <= INT64_MAX else None


class DropPeer(Exception):
    """Raised by a handler when gearmand would drop the connection (internal error path)."""


class JobObserver(Protocol):
    """Optional hook told of job state changes (metrics, debug log); not on the packet path."""

    def created(self, job: Job) -> None: ...

    def started(self, job: Job) -> None: ...

    def finished(self, job: Job, result: str) -> None: ...

    def requeued(self, job: Job) -> None: ...

    def cancelled(self, job: Job) -> None: ...

    def forgotten(self, function: bytes) -> None:
        """An idle function was forgotten: drop what is kept for it."""


class Gate(Protocol):
    """Optional access check for CAN_DO and submits (``gearshift.server.access``)."""

    def may_register(self, peer: Peer, function: bytes) -> bool: ...

    def may_submit(self, peer: Peer, function: bytes) -> bool: ...


class Timers(Protocol):
    """Where the scheduler gets its timers (asyncio's loop in the server, a fake in tests)."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle: ...


class Scheduler:
    """All job state of one server.

    Args:
        timers: creates the epoch and CAN_DO_TIMEOUT timers.
        clock: wall-clock seconds (``time.time``); only epoch jobs read it.
        handle_prefix: job handles are ``<prefix>:<n>``.
        job_retries: -1 unlimited, 0 fail on the first lost worker, N allow N requeues.
        worker_wakeup: sleeping workers woken per new job; 0 wakes all of them.
        exceptions: new peers start with the ``exceptions`` option on.
        wakeup_delay: seconds after which a job still queued after its NOOP wakes the
            next sleeping worker (a woken worker may never send GRAB_JOB); 0 = never.
        store_done: called with a stored job's record when it leaves the persistent
            queue (finished, cancelled, dropped); the server forwards it to the store.
        job_type: the class of new jobs; ``model.CheckedJob`` checks every state
            change against ``model.TRANSITIONS`` (tests, debugging).
    """

    def __init__(
        self,
        timers: Timers,
        clock: Callable[[], float],
        *,
        handle_prefix: bytes = b"H:localhost",
        job_retries: int = -1,
        worker_wakeup: int = 1,
        exceptions: bool = False,
        wakeup_delay: float = 0.05,
        store_done: Callable[[StoredJob], None] | None = None,
        job_type: type[Job] = Job,
    ) -> None:
        self.timers = timers
        self.clock = clock
        self.handle_prefix = handle_prefix + b":"
        self.job_retries = job_retries
        self.worker_wakeup = worker_wakeup
        self.exceptions = exceptions
        self.store_done = store_done
        self.job_type = job_type
        self.wakeups = Wakeups(self, worker_wakeup, wakeup_delay)
        #: Submits are refused (ERR_DRAINING) while the server drains for shutdown, and
        #: durable jobs are not handed out: they stay in the store for the next start.
        self.draining = False
        #: Durable jobs given up to the store by ``drain`` (and during it).
        self.left_in_store = 0
        #: Jobs ``IGNORED`` and not reaped yet (nobody waits for them).
        self.ignored = 0
        #: Functions that went idle, and whether ``forget_idle`` has seen them idle.
        self._idle: dict[Function, bool] = {}
        self.functions: dict[bytes, Function] = {}
        self.handles: dict[bytes, Job] = {}
        #: unique -> the job submits with that unique coalesce onto; when jobs of
        #: several functions share a unique (rare), a table function name -> job.  Keyed
        #: by the unique alone so that GET_STATUS_UNIQUE is one lookup, and a job's key
        #: is its own ``unique`` bytes (no tuple per job).
        self.uniques: dict[bytes, Job | dict[bytes, Job]] = {}
        #: (function, payload) -> job, for the unique ``-`` (coalesce by payload).
        self.payload_uniques: dict[tuple[bytes, bytes], Job] = {}
        self.peers: dict[Peer, None] = {}
        self.dirty: list[Peer] = []
        self.stats = Stats()
        self.observer: JobObserver | None = None
        self.gate: Gate | None = None
        self._counter = itertools.count(1)
        self._epoch_heap: list[tuple[int, int, Job]] = []
        self._epoch_seq = itertools.count()
        self._epoch_timer: TimerHandle | None = None
        self._epoch_timer_at = 0.0
        self.dispatch: list[Handler] = [self._not_expected] * 43
        d = self.dispatch
        d[_T.CAN_DO] = self.can_do
        d[_T.CANT_DO] = self.cant_do
        d[_T.RESET_ABILITIES] = self.reset_abilities
        d[_T.PRE_SLEEP] = self.pre_sleep
        for ptype in SUBMITS:
            d[ptype] = self._submit_handler(ptype)
        d[_T.GRAB_JOB] = self.grab_job
        d[_T.GRAB_JOB_UNIQ] = self.grab_job_uniq
        d[_T.GRAB_JOB_ALL] = self.grab_job_all
        d[_T.WORK_DATA] = self.work_data
        d[_T.WORK_WARNING] = self.work_warning
        d[_T.WORK_STATUS] = self.work_status
        d[_T.WORK_COMPLETE] = self.work_complete
        d[_T.WORK_FAIL] = self.work_fail
        d[_T.WORK_EXCEPTION] = self.work_exception
        d[_T.GET_STATUS] = self.get_status
        d[_T.GET_STATUS_UNIQUE] = self.get_status_unique
        d[_T.ECHO_REQ] = self.echo
        d[_T.OPTION_REQ] = self.option
        d[_T.SET_CLIENT_ID] = self.set_client_id
        d[_T.CAN_DO_TIMEOUT] = self.can_do_timeout
        # Everything else (responses, ALL_YOURS, SUBMIT_JOB_SCHED, type 5) is
        # "Command not expected", as gearmand answers.

    # ------------------------------------------------------------------ host

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """A timer (for ``wakeups``)."""
        return self.timers.call_later(delay, callback)

    def now(self) -> float:
        """The wall clock (for ``wakeups``)."""
        return self.clock()

    # ------------------------------------------------------------------ output

    def send(self, peer: Peer, data: bytes) -> None:
        """Queue ``data`` for ``peer``; it is written when the batch is flushed."""
        if peer.closed:
            return
        out = peer.out
        if not out:
            self.dirty.append(peer)
        out.append(data)

    def send_parts(self, peer: Peer, parts: list[bytes]) -> None:
        """Queue the pieces of one packet (``codec.response_parts``) for ``peer``."""
        if peer.closed:
            return
        out = peer.out
        if not out:
            self.dirty.append(peer)
        out.extend(parts)

    def flush(self) -> None:
        """Ask every peer with pending output to write it."""
        # A peer's flush only writes to its transport, so one pass suffices.
        batch = self.dirty
        self.dirty = []
        for peer in batch:
            peer.flush()

    # ------------------------------------------------------------------ peers

    def connect(self, peer: Peer) -> None:
        """Register a new connection."""
        if self.exceptions:
            peer.exceptions = True
        self.peers[peer] = None

    def disconnect(self, peer: Peer) -> None:
        """The connection is gone: requeue its running jobs, detach it from its jobs."""
        if peer.closed:
            return
        woken_unused = peer.sleeping and peer.noop_sent
        peer.closed = True
        peer.out.clear()
        self.peers.pop(peer, None)
        for job in reversed(list(peer.jobs)):
            self._requeue(job)
        for job in list(peer.listening):
            self._detach(job, peer)
        funcs = peer.funcs
        for f in peer.abilities:
            f.workers -= 1
            if not f.workers and not f.total:
                self._idle[f] = False
        peer.abilities = []
        peer.funcs = []
        peer.timeouts.clear()
        if woken_unused:
            # It was woken for a job it never grabbed: pass the wakeup on.
            for f in funcs:
                if self.has_runnable(f):
                    self.wakeups.wake(f, 1)

    # ------------------------------------------------------------------ functions

    def function(self, name: bytes) -> Function:
        """Get or create a function (``forget_idle`` forgets it once it is idle again)."""
        f = self.functions.get(name)
        if f is None:
            f = self.functions[name] = Function(name)
        return f

    def drop_function(self, f: Function) -> None:
        del self.functions[f.name]
        self._forget_stats(f.name)

    def forget_idle(self) -> int:
        """Forget the functions that stayed idle since the previous call.

        gearmand keeps every function it ever saw until it restarts, so names sent once
        (a typo, a scan, one job each to 100,000 functions) cost memory forever and
        fill every ``status`` reply.  A function with no workers and no jobs left, and
        no ``maxqueue`` set on it (not even one made by ``create function``), is forgotten
        here; the server calls this from its housekeeping timer, so ``status`` still
        lists such a function for one to two housekeeping intervals.  Only functions
        that went idle are visited, never the whole table.  Returns how many went.
        """
        forgotten = 0
        functions = self.functions
        for f, seen in list(self._idle.items()):
            if not f.idle or functions.get(f.name) is not f:
                del self._idle[f]
            elif seen:
                del self._idle[f]
                del functions[f.name]
                self._forget_stats(f.name)
                forgotten += 1
            else:
                self._idle[f] = True
        return forgotten

    def note_idle(self, f: Function) -> None:
        """``f`` may have become idle by other means than a job or worker leaving."""
        if f.idle:
            self._idle[f] = False

    def _forget_stats(self, name: bytes) -> None:
        self.stats.submitted.pop(name, None)
        for result in ("complete", "fail", "exception"):
            self.stats.finished.pop((name, result), None)
        if self.observer is not None:
            self.observer.forgotten(name)

    # ------------------------------------------------------------------ submit

    def _submit_handler(self, ptype: int) -> Handler:
        """The dispatch entry of one submit type, read with its layout (``SUBMITS``)."""
        layout = SUBMITS[PacketType(ptype)]
        if layout.epoch or layout.reducer:

            def handler(peer: Peer, args: Args) -> None:
                self.submit_request(peer, ptype, args)

            return handler
        # The plain submits, on the per-job path: the layout read once, here.
        priority = int(layout.priority)
        background = layout.background

        def plain(peer: Peer, args: Args) -> None:
            self.submit(peer, args[0], args[1], args[2], priority, background)

        return plain

    def submit_request(
        self, peer: Peer, ptype: int, args: Args, *, defer: bool = False
    ) -> Job | None:
        """Submit what a submit packet of type ``ptype`` asks for (``args`` laid out as
        ``packets.SUBMITS`` says); refuse a bad epoch or reducer.  See ``submit``."""
        layout = SUBMITS[PacketType(ptype)]
        when = 0
        if layout.epoch:
            parsed = strtoll(args[layout.epoch])
            if parsed is None:
                self.send(peer, ERR_BAD_EPOCH)
                return None
            when = parsed
        reducer = b""
        if layout.reducer:
            # The aggregator after the reducer is accepted and ignored, as gearmand does.
            reducer = args[layout.reducer]
            if len(reducer) > MAX_UNIQUE:
                self.send(peer, ERR_UNIQUE_TOO_LARGE)
                return None
        return self.submit(
            peer,
            args[0],
            args[1],
            args[layout.data],
            int(layout.priority),
            layout.background,
            when=when,
            reducer=reducer,
            defer=defer,
        )

    def submit_epoch(self, peer: Peer, args: Args) -> None:
        """SUBMIT_JOB_EPOCH, by name (the dispatch table has it under its type)."""
        self.submit_request(peer, _T.SUBMIT_JOB_EPOCH, args)

    def submit(
        self,
        peer: Peer | None,
        name: bytes,
        unique: bytes,
        data: bytes,
        priority: int,
        background: bool,
        *,
        when: int = 0,
        reducer: bytes = b"",
        defer: bool = False,
        stored: StoredJob | None = None,
    ) -> Job | None:
        """Create a job or coalesce onto an existing one; answer ``peer``.

        Args:
            peer: the submitting connection (``None`` when replaying the store).
            defer: create the job but neither queue it nor answer JOB_CREATED; the
                caller makes it durable first, then calls ``activate`` or ``abort``.
            stored: the store's record of a replayed job.

        Returns:
            The new job, or ``None`` when the submit coalesced or was refused.
        """
        if self.draining and peer is not None:
            self.send(peer, ERR_DRAINING)
            return None
        if len(unique) > MAX_UNIQUE:
            if peer is not None:
                self.send(peer, ERR_UNIQUE_TOO_LARGE)
            return None
        if self.gate is not None and peer is not None and not self.gate.may_submit(peer, name):
            self.send(peer, ERR_PERMISSION_DENIED)
            return None
        f = self.functions.get(name)
        if f is None:
            f = self.functions[name] = Function(name)
        key: tuple[bytes, bytes] | None = None
        existing: Job | None = None
        if not unique:
            pass
        elif unique == b"-":
            if data:
                # bytes(): a large payload may arrive as a (never mutated) bytearray.
                key = (name, bytes(data))
                existing = self.payload_uniques.get(key)
        else:
            entry = self.uniques.get(unique)
            if isinstance(entry, dict):
                existing = entry.get(name)
            elif entry is not None and entry.func is f:
                existing = entry
        if existing is not None:
            # An ignored job (its clients left, or cancelled) stays findable by
            # GET_STATUS_UNIQUE until reaped, as in gearmand, but nobody attaches to it.
            if existing.state is not _IGNORED:
                if peer is not None:
                    if not background:
                        existing.clients.append(peer)
                        peer.listening.add(existing)
                    self.send(peer, _packet(_T.JOB_CREATED, existing.handle))
                return None
        limit = f.maxqueue[priority]
        if limit > 0 and f.total >= limit and stored is None:
            if peer is not None:
                self.send(peer, ERR_QUEUE_FULL)
            return None
        handle = self.handle_prefix + str(next(self._counter)).encode()
        job = self.job_type(handle, f, unique, data, priority, background, when, reducer)
        job.key = key
        job.stored = stored
        f.total += 1
        self.handles[handle] = job
        if key is not None:
            self.payload_uniques[key] = job
        elif unique and unique != b"-":
            self._index_unique(unique, job)
        submitted = self.stats.submitted
        submitted[name] = submitted.get(name, 0) + 1
        if self.observer is not None:
            self.observer.created(job)
        if not background and peer is not None:
            job.clients.append(peer)
            peer.listening.add(job)
        if defer:
            return job  # PENDING until ``activate`` or ``abort``
        self._enqueue(job)
        if peer is not None and not peer.closed:
            # ``send``, inlined on the per-job path.
            out = peer.out
            if not out:
                self.dirty.append(peer)
            out.append(_pack_header(RES, _JOB_CREATED, len(handle)) + handle)
        return job

    def activate(self, job: Job, peer: Peer, stored: StoredJob) -> None:
        """The store made a deferred job durable: queue it and answer JOB_CREATED."""
        job.stored = stored
        state = job.state
        if self.draining and state is _PENDING and not stored.coalesced:
            # Durable, but the server is draining: it runs after the next start.
            self._leave_in_store(job)
        elif state is not _PENDING or stored.coalesced:
            # Every client that coalesced onto it left meanwhile, or (a clustered
            # store) another server already holds this unique: acknowledged, not queued.
            # Foreground clients that joined it would wait for a result this server
            # never gets: they are failed.
            job.stored = None
            self._notify_done(stored)
            if state is not _GONE:
                self._fail_clients(job)
                self._remove(job)
        else:
            self._enqueue(job)
        self.send(peer, _packet(_T.JOB_CREATED, job.handle))

    def abort(self, job: Job, peer: Peer, error: bytes) -> None:
        """The store refused a deferred job: forget it and answer ``error``."""
        if job.state is not _GONE:
            self._fail_clients(job)
            self._remove(job)
        self.send(peer, error)

    def _fail_clients(self, job: Job) -> None:
        """WORK_FAIL to every client waiting on ``job``."""
        if job.clients:
            fail = _packet(_T.WORK_FAIL, job.handle)
            for client in job.clients:
                self.send(client, fail)

    # ------------------------------------------------------------------ queueing

    def _enqueue(self, job: Job) -> None:
        """A new (or newly durable) job joins its queue, or the epoch heap."""
        if job.when and job.when > self.clock():
            job.state = _DELAYED
            f = job.func
            f.delayed[job.priority] += 1
            heapq.heappush(self._epoch_heap, (job.when, next(self._epoch_seq), job))
            self._arm_epoch_timer()
            return
        job.state = _QUEUED
        job.func.queues[job.priority].append(job)
        if job.func.sleepers:
            self.wakeups.wake(job.func, 1)

    def _arm_epoch_timer(self) -> None:
        heap = self._epoch_heap
        if not heap:
            return
        first = heap[0][0]
        if self._epoch_timer is not None:
            if self._epoch_timer_at <= first:
                return
            self._epoch_timer.cancel()
        self._epoch_timer_at = first
        self._epoch_timer = self.timers.call_later(max(0.0, first - self.clock()), self._epoch_due)

    def _epoch_due(self) -> None:
        self._epoch_timer = None
        now = self.clock()
        heap = self._epoch_heap
        while heap and heap[0][0] <= now:
            job = heapq.heappop(heap)[2]
            f = job.func
            f.delayed[job.priority] -= 1
            f.queues[job.priority].append(job)
            if job.state is _DELAYED:
                job.state = _QUEUED
                if f.sleepers:
                    self.wakeups.wake(f, 1)
        self._arm_epoch_timer()

    def has_runnable(self, f: Function) -> bool:
        """Does ``f`` have a queued job a worker would get (ignored ones are reaped)?"""
        for q in f.queues:
            while q:
                if q[0].state is not _QUEUED:
                    self._reap(q.popleft())
                    continue
                return True
        return False

    def _reap(self, job: Job) -> None:
        """Drop an ignored job that a GRAB (or a check) reached in its queue."""
        if job.state is not _GONE:
            self._remove(job)

    def _remove(self, job: Job) -> None:
        """Forget a job entirely (it is no longer queued or running)."""
        if job.state is _IGNORED:
            self.ignored -= 1
        job.state = _GONE
        f = job.func
        f.total -= 1
        if not f.total and not f.workers:
            self._idle[f] = False
        self.handles.pop(job.handle, None)
        key = job.key
        if key is not None:
            if self.payload_uniques.get(key) is job:
                del self.payload_uniques[key]
        elif job.unique:
            self._unindex_unique(job.unique, job)
        worker = job.worker
        if worker is not None:
            f.running -= 1
            worker.jobs.pop(job, None)
            job.worker = None
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None
        for client in job.clients:
            client.listening.discard(job)
        job.clients = []
        stored = job.stored
        if stored is not None:
            job.stored = None
            self._notify_done(stored)

    def _notify_done(self, stored: StoredJob) -> None:
        if self.store_done is not None:
            self.store_done(stored)

    def _requeue(self, job: Job) -> None:
        """The job's worker is gone (disconnect, CANT_DO, timeout): retry or fail it."""
        worker = job.worker
        if worker is not None:
            worker.jobs.pop(job, None)
            job.worker = None
            job.func.running -= 1
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None
        job.retries += 1
        if job.state is _IGNORED:
            self._remove(job)
            return
        if 0 <= self.job_retries < job.retries:
            logger.info(
                "dropped job %r after %d retries", job.handle.decode(errors="replace"), job.retries
            )
            self._fail_clients(job)
            self._count_finished(job, "fail")
            self._remove(job)
            return
        if self.draining and job.stored is not None:
            self._leave_in_store(job)
            return
        job.numerator = job.denominator = b"0"
        if self.observer is not None:
            self.observer.requeued(job)
        job.state = _QUEUED
        job.func.queues[job.priority].append(job)
        if job.func.sleepers:
            self.wakeups.wake(job.func, 1)

    def _detach(self, job: Job, peer: Peer) -> None:
        """A waiting client left; a job nobody waits for any more is ignored."""
        clients = job.clients
        try:
            clients.remove(peer)
        except ValueError:
            return
        peer.listening.discard(job)
        if not clients and job.state is not _GONE:
            self._ignore(job)

    def _ignore(self, job: Job) -> None:
        """Nobody waits for ``job`` any more: it goes when it is reached.  Like gearmand,
        an ignored job no longer counts as persistently queued."""
        if job.state is not _IGNORED:
            self.ignored += 1
            job.state = _IGNORED
        stored = job.stored
        if stored is not None:
            job.stored = None
            self._notify_done(stored)

    def drain(self) -> int:
        """Start draining for shutdown: refuse submits, give queued durable jobs back.

        Queued and delayed jobs that the store holds stay there for the next start
        (``withdraw_stored``), and so do those that come back later (a worker that
        leaves, an add that completes); foreground jobs and jobs the store does not
        hold still run.  Returns how many jobs were left in the store so far.
        """
        self.draining = True
        if self.store_done is not None:
            self.left_in_store += self.withdraw_stored()
        return self.left_in_store

    def _leave_in_store(self, job: Job) -> None:
        """Forget a durable job here without deleting it from the store."""
        job.stored = None
        self._fail_clients(job)
        self._remove(job)
        self.left_in_store += 1

    def withdraw_stored(self) -> int:
        """Give up every queued stored job without touching the store (cluster fencing).

        Called when this server's cluster lease has run out: another server may take
        these jobs over, so they must not run here too.  Running and pending jobs are
        left alone.  Foreground clients that coalesced onto one get WORK_FAIL.
        Returns how many jobs were withdrawn.
        """
        gone: list[Job] = []
        for f in self.functions.values():
            for q in f.queues:
                if any(job.stored is not None for job in q):
                    keep = [job for job in q if job.stored is None]
                    gone += [job for job in q if job.stored is not None]
                    q.clear()
                    q.extend(keep)
        if any(entry[2].stored is not None for entry in self._epoch_heap):
            for entry in self._epoch_heap:
                job = entry[2]
                if job.stored is not None:
                    job.func.delayed[job.priority] -= 1
                    gone.append(job)
            self._epoch_heap = [e for e in self._epoch_heap if e[2].stored is None]
            heapq.heapify(self._epoch_heap)
        for job in gone:
            job.stored = None
            self._fail_clients(job)
            self._remove(job)
        return len(gone)

    def cancel(self, handle: bytes) -> bool:
        """Admin ``cancel job``: WORK_FAIL to its clients, leave the store, ignore it."""
        job = self.handles.get(handle)
        if job is None or job.state is _IGNORED:
            return job is not None
        self._fail_clients(job)
        for client in job.clients:
            client.listening.discard(job)
        job.clients = []
        self._ignore(job)
        if self.observer is not None:
            self.observer.cancelled(job)
        return True

    # ------------------------------------------------------------------ workers

    def can_do(self, peer: Peer, args: Args) -> None:
        if self.gate is not None and not self.gate.may_register(peer, args[0]):
            self.send(peer, ERR_PERMISSION_DENIED)
            return
        self._add_ability(peer, args[0])
        peer.timeouts.pop(self.function(args[0]), None)

    def can_do_timeout(self, peer: Peer, args: Args) -> None:
        if self.gate is not None and not self.gate.may_register(peer, args[0]):
            self.send(peer, ERR_PERMISSION_DENIED)
            return
        f = self._add_ability(peer, args[0])
        ms = atoi(args[1])
        if ms > 0:
            # Bounded so that the timer's delay stays a sane number (~24.8 days).
            peer.timeouts[f] = min(ms, MAX_TIMEOUT_MS)
        else:
            peer.timeouts.pop(f, None)

    def _add_ability(self, peer: Peer, name: bytes) -> Function:
        f = self.function(name)
        peer.abilities.append(f)
        f.workers += 1
        if f not in peer.funcs:
            # Newest first, as gearmand tries a worker's functions.
            peer.funcs.insert(0, f)
            if peer.sleeping and not peer.noop_sent:
                if self.has_runnable(f):
                    peer.noop_sent = True
                    self.send(peer, NOOP_PACKET)
                else:
                    self.wakeups.sleep(f, peer)
        return f

    def cant_do(self, peer: Peer, args: Args) -> None:
        f = self.functions.get(args[0])
        if f is None or f not in peer.funcs:
            return
        self._remove_abilities(peer, {f})

    def reset_abilities(self, peer: Peer, args: Args) -> None:
        self._remove_abilities(peer, set(peer.funcs))

    def _remove_abilities(self, peer: Peer, gone: set[Function]) -> None:
        kept = []
        for f in peer.abilities:
            if f in gone:
                f.workers -= 1
                if not f.workers and not f.total:
                    self._idle[f] = False
            else:
                kept.append(f)
        peer.abilities = kept
        peer.funcs = [f for f in peer.funcs if f not in gone]
        for f in gone:
            peer.timeouts.pop(f, None)
        for job in [j for j in reversed(peer.jobs) if j.func in gone]:
            self._requeue(job)
        if peer.sleeping and not peer.noop_sent:
            # Start a new sleep cycle on the functions it still has, so the entries
            # left in the dropped functions' sleeper deques no longer wake it.
            peer.sleep_seq += 1
            for f in peer.funcs:
                self.wakeups.sleep(f, peer)

    def pre_sleep(self, peer: Peer, args: Args) -> None:
        peer.sleeping = True
        peer.noop_sent = False
        peer.sleep_seq += 1
        for f in peer.funcs:
            if self.has_runnable(f):
                peer.noop_sent = True
                self.send(peer, NOOP_PACKET)
                return
        for f in peer.funcs:
            self.wakeups.sleep(f, peer)

    def _take(self, peer: Peer) -> Job | None:
        funcs = peer.funcs
        n = len(funcs)
        if n == 1:
            f = funcs[0]
            for q in f.queues:
                while q:
                    job = q.popleft()
                    if job.state is not _QUEUED:
                        self._reap(job)
                        continue
                    return job
            return None
        for p in (HIGH, NORMAL, LOW):
            for idx in range(n):
                q = funcs[idx].queues[p]
                while q:
                    job = q.popleft()
                    if job.state is not _QUEUED:
                        self._reap(job)
                        continue
                    # Round-robin: the function that yielded goes to the back.
                    funcs.append(funcs.pop(idx))
                    return job
        return None

    def _assign(self, peer: Peer) -> Job | None:
        peer.sleeping = False
        peer.noop_sent = False
        job = self._take(peer)
        if job is None:
            self.send(peer, NO_JOB_PACKET)
            return None
        job.state = _RUNNING
        job.worker = peer
        job.func.running += 1
        peer.jobs[job] = None
        if self.observer is not None:
            self.observer.started(job)
        if peer.timeouts:
            ms = peer.timeouts.get(job.func)
            if ms:
                job.timer = self.timers.call_later(
                    max(ms, MIN_TIMEOUT_MS) / 1000.0, lambda: self._timed_out(job, peer)
                )
        return job

    def _timed_out(self, job: Job, peer: Peer) -> None:
        job.timer = None
        if job.state is not _GONE and job.worker is peer:
            logger.info(
                "job %s timed out on worker fd %d, requeueing",
                job.handle.decode(errors="replace"),
                peer.fd,
            )
            self._requeue(job)

    def grab_job(self, peer: Peer, args: Args) -> None:
        job = self._assign(peer)
        if job is None:
            return
        data = job.data
        if len(data) < LARGE_PAYLOAD:
            # The per-job case, inlined: one small packet, one buffer.
            body = b"\0".join((job.handle, job.func.name, data))
            if not peer.closed:  # ``send``, inlined
                out = peer.out
                if not out:
                    self.dirty.append(peer)
                out.append(_pack_header(RES, _JOB_ASSIGN, len(body)) + body)
        else:
            self.send_parts(peer, _parts(_JOB_ASSIGN, job.handle, job.func.name, data))

    def grab_job_uniq(self, peer: Peer, args: Args) -> None:
        job = self._assign(peer)
        if job is not None:
            self.send_parts(
                peer,
                _parts(_T.JOB_ASSIGN_UNIQ, job.handle, job.func.name, job.unique, job.data),
            )

    def grab_job_all(self, peer: Peer, args: Args) -> None:
        job = self._assign(peer)
        if job is None:
            return
        if job.reducer:
            parts = _parts(
                _T.JOB_ASSIGN_ALL, job.handle, job.func.name, job.unique, job.reducer, job.data
            )
        else:
            parts = _parts(_T.JOB_ASSIGN_UNIQ, job.handle, job.func.name, job.unique, job.data)
        self.send_parts(peer, parts)

    # ------------------------------------------------------------------ results

    def _owned(self, peer: Peer, handle: bytes, error: bytes) -> Job | None:
        job = self.handles.get(handle)
        if job is None or job.worker is not peer:
            self.send(peer, error)
            return None
        return job

    def _fan_out(self, job: Job, parts: list[bytes]) -> None:
        for client in job.clients:
            self.send_parts(client, parts)

    def work_data(self, peer: Peer, args: Args) -> None:
        job = self._owned(peer, args[0], ERR_NOT_FOUND_DATA)
        if job is not None and job.clients:
            self._fan_out(job, _parts(_T.WORK_DATA, args[0], args[1]))

    def work_warning(self, peer: Peer, args: Args) -> None:
        job = self._owned(peer, args[0], ERR_NOT_FOUND_DATA)
        if job is not None and job.clients:
            self._fan_out(job, _parts(_T.WORK_WARNING, args[0], args[1]))

    def work_status(self, peer: Peer, args: Args) -> None:
        job = self._owned(peer, args[0], ERR_NOT_FOUND_RESULT)
        if job is None:
            return
        job.numerator = str(atoi(args[1]) & 0xFFFFFFFF).encode()
        job.denominator = str(atoi(args[2]) & 0xFFFFFFFF).encode()
        if job.clients:
            self._fan_out(job, [_packet(_T.WORK_STATUS, *args)])

    def work_complete(self, peer: Peer, args: Args) -> None:
        handle = args[0]
        job = self.handles.get(handle)
        if job is None or job.worker is not peer:
            self.send(peer, ERR_NOT_FOUND_RESULT)
            return
        clients = job.clients
        if clients:
            data = args[1]
            if len(data) < LARGE_PAYLOAD:
                # The per-job case, inlined: one small packet shared by every client.
                body = b"\0".join((handle, data))
                packet = _pack_header(RES, _WORK_COMPLETE, len(body)) + body
                dirty = self.dirty
                for client in clients:
                    if not client.closed:  # ``send``, inlined
                        out = client.out
                        if not out:
                            dirty.append(client)
                        out.append(packet)
            else:
                self._fan_out(job, _parts(_WORK_COMPLETE, handle, data))
        self._count_finished(job, "complete")
        self._remove(job)

    def work_fail(self, peer: Peer, args: Args) -> None:
        if len(args[0]) >= MAX_HANDLE:
            self.send(peer, ERR_HANDLE_TOO_LARGE)
            return
        job = self._owned(peer, args[0], ERR_NOT_FOUND_RESULT)
        if job is None:
            return
        if job.clients:
            self._fan_out(job, [_packet(_T.WORK_FAIL, args[0])])
        self._count_finished(job, "fail")
        self._remove(job)

    def work_exception(self, peer: Peer, args: Args) -> None:
        job = self._owned(peer, args[0], ERR_NOT_FOUND_EXCEPTION)
        if job is None:
            return
        if job.clients:
            exc = _parts(_T.WORK_EXCEPTION, args[0], args[1])
            # gearmand's quirk: clients without the option get the handle plus a NUL.
            fail = [_packet(_T.WORK_FAIL, args[0], b"")]
            for client in job.clients:
                self.send_parts(client, exc if client.exceptions else fail)
        self._count_finished(job, "exception")
        self._remove(job)

    def _count_finished(self, job: Job, result: str) -> None:
        finished = self.stats.finished
        key = (job.func.name, result)
        finished[key] = finished.get(key, 0) + 1
        if self.observer is not None:
            self.observer.finished(job, result)

    # ------------------------------------------------------------------ misc

    def handle(self, peer: Peer, ptype: int, args: Args) -> None:
        """Dispatch one decoded request packet."""
        self.dispatch[ptype](peer, args)

    def _not_expected(self, peer: Peer, args: Args) -> None:
        self.send(peer, ERR_NOT_EXPECTED)

    def get_status(self, peer: Peer, args: Args) -> None:
        handle = args[0]
        if len(handle) >= MAX_HANDLE:
            raise DropPeer("GET_STATUS handle too long")
        job = self.handles.get(handle)
        if job is None:
            self.send(peer, _packet(_T.STATUS_RES, handle, b"0", b"0", b"0", b"0"))
            return
        running = b"1" if job.worker is not None else b"0"
        self.send(
            peer,
            _packet(_T.STATUS_RES, handle, b"1", running, job.numerator, job.denominator),
        )

    def find_unique(self, unique: bytes) -> Job | None:
        """The oldest job with this unique id, in any function: one lookup (a scan of
        every function per GET_STATUS_UNIQUE would let one peer stall the server)."""
        entry = self.uniques.get(unique)
        if isinstance(entry, dict):
            return next(iter(entry.values()))
        return entry

    def _index_unique(self, unique: bytes, job: Job) -> None:
        """Make ``job`` the one its function's submits with ``unique`` coalesce onto
        (replacing an ignored job, if any)."""
        uniques = self.uniques
        entry = uniques.get(unique)
        if isinstance(entry, dict):
            entry[job.func.name] = job
        elif entry is None or entry.func is job.func:
            uniques[unique] = job
        else:
            # The same unique in a second function: rare, so a table only then.
            uniques[unique] = {entry.func.name: entry, job.func.name: job}

    def _unindex_unique(self, unique: bytes, job: Job) -> None:
        uniques = self.uniques
        entry = uniques.get(unique)
        if entry is job:
            del uniques[unique]
        elif isinstance(entry, dict):
            name = job.func.name
            if entry.get(name) is job:
                del entry[name]
                if len(entry) == 1:
                    uniques[unique] = next(iter(entry.values()))

    def get_status_unique(self, peer: Peer, args: Args) -> None:
        unique = args[0]
        job = self.find_unique(unique)
        if job is None:
            packet = _packet(_T.STATUS_RES_UNIQUE, unique, b"0", b"0", b"0", b"0", b"0")
        else:
            packet = _packet(
                _T.STATUS_RES_UNIQUE,
                unique,
                b"1",
                b"1" if job.worker is not None else b"0",
                job.numerator,
                job.denominator,
                str(len(job.clients)).encode(),
            )
        self.send(peer, packet)

    def echo(self, peer: Peer, args: Args) -> None:
        self.send_parts(peer, _parts(_T.ECHO_RES, args[0]))

    def option(self, peer: Peer, args: Args) -> None:
        # gearmand compares the name as a C string (up to a NUL) and echoes the body.
        if args[0].split(b"\0", 1)[0].lower() == b"exceptions":
            peer.exceptions = True
            self.send(peer, _packet(_T.OPTION_RES, args[0]))
        else:
            self.send(peer, ERR_UNKNOWN_OPTION)

    def set_client_id(self, peer: Peer, args: Args) -> None:
        peer.client_id = args[0][:MAX_CLIENT_ID]

    # ------------------------------------------------------------------ replay

    def replay(self, stored: StoredJob) -> Job | None:
        """Re-create a background job from the persistent queue (before listening)."""
        return self.submit(
            None,
            stored.function,
            stored.unique,
            stored.data,
            int(stored.priority),
            True,
            when=stored.when,
            stored=stored,
        )

    # ------------------------------------------------------------------ memory

    def compact(self) -> int:
        """Rebuild job and peer tables that a burst grew and that are now mostly empty.

        A dict never shrinks as entries are deleted: after 200,000 queued jobs drain, the
        handle and unique tables keep about 10 MiB each.  A rebuild costs a pass over the
        live entries.  The server calls this from a housekeeping timer, off the per-job
        path.  Returns the bytes of table given back.
        """
        freed = 0
        for name in ("handles", "uniques", "payload_uniques", "peers"):
            table: dict[object, object] = getattr(self, name)
            size = sys.getsizeof(table)
            if size >= _COMPACT_MIN_BYTES and len(table) * _COMPACT_BYTES_PER_ENTRY < size:
                fresh = dict(table)
                freed += size - sys.getsizeof(fresh)
                setattr(self, name, fresh)
        return freed

    # ------------------------------------------------------------------ views

    def job_count(self) -> int:
        """Jobs that exist (queued, running, delayed, pending)."""
        return len(self.handles)

    def wanted_count(self) -> int:
        """Jobs somebody still waits for: all but the ignored ones (a drain waits for
        these; an ignored job only waits to be reaped)."""
        return len(self.handles) - self.ignored

    def stored_record(self, job: Job) -> StoredJob:
        """The record a store keeps for a new background job."""
        return StoredJob(
            function=job.func.name,
            unique=job.unique,
            data=bytes(job.data),  # a large payload may be a bytearray
            priority=Priority(job.priority),
            when=job.when,
        )


__all__ = [
    "ERR_BAD_EPOCH",
    "ERR_MAGIC",
    "DropPeer",
    "Gate",
    "JobObserver",
    "Scheduler",
    "Timers",
    "atoi",
    "strtoll",
]
