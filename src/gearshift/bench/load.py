"""The load itself: one role per child process, many raw-protocol connections per role.

How it works: a bench child process runs one asyncio event loop (uvloop when it is
installed) with ``connections`` ``asyncio.Protocol`` objects of one role:

- ``fg``: a client keeping ``pipeline`` SUBMIT_JOBs in flight, timing each from the
  submit to its WORK_COMPLETE and checking the echoed bytes.
- ``bg``: a submitter of SUBMIT_JOB_BG, timing submit -> JOB_CREATED, until its share
  of ``jobs`` is acknowledged.
- ``worker``: CAN_DO, then GRAB_JOB / PRE_SLEEP / NOOP; echoes every job's data back.
- ``drain``: like ``worker`` but answers with an empty WORK_COMPLETE, records when each
  job was done, and starts grabbing only on the go signal.
- ``idle``: a sleeper (CAN_DO + PRE_SLEEP) that counts the NOOPs it is woken with and
  answers any job it gets like a worker.

Packets are parsed with gearshift's sans-IO ``Decoder`` and built from pre-encoded
pieces; every batch of replies from one ``data_received`` goes out in one
``writelines``.  Each connection sends an ECHO_REQ after its registration packets,
so its ECHO_RES proves the server has processed them: that is "ready".

The parent talks to a child through a few shared objects (``Shared``): a slot in
``progress`` where the child publishes its job count every 50 ms, two stop
``flags`` (clients stop first, so that workers finish the jobs in flight), a ``go``
event that starts the clients of every process at once, and a queue for the
``ready`` message and the final ``ChildReport``.  Times are ``time.monotonic()``,
which is CLOCK_MONOTONIC and so comparable between processes.
"""

from __future__ import annotations

import abc
import asyncio
import ctypes
import os
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any, NamedTuple, cast

from gearshift.errors import GearmanError
from gearshift.protocol.codec import Decoder, Packet, encode_header, encode_request
from gearshift.protocol.packets import REQ, PacketType

ROLES = ("fg", "bg", "worker", "drain", "idle")
CLIENT_ROLES = ("fg", "bg")
#: Index into ``Shared.flags``: stop submitting (clients), stop serving (workers, sleepers).
CLIENT_STOP = 0
WORKER_STOP = 1

_TICK = 0.05
#: How long stopping clients wait for the jobs still in flight.
_STOP_GRACE = 15.0
_CONNECT_PARALLEL = 64

_SUBMIT_JOB = int(PacketType.SUBMIT_JOB)
_SUBMIT_JOB_BG = int(PacketType.SUBMIT_JOB_BG)
_JOB_CREATED = int(PacketType.JOB_CREATED)
_WORK_COMPLETE = int(PacketType.WORK_COMPLETE)
_WORK_FAIL = int(PacketType.WORK_FAIL)
_WORK_EXCEPTION = int(PacketType.WORK_EXCEPTION)
_JOB_ASSIGN = int(PacketType.JOB_ASSIGN)
_NO_JOB = int(PacketType.NO_JOB)
_NOOP = int(PacketType.NOOP)
_ECHO_RES = int(PacketType.ECHO_RES)
_ERROR = int(PacketType.ERROR)

_GRAB = encode_request(PacketType.GRAB_JOB)
_PRE_SLEEP = encode_request(PacketType.PRE_SLEEP)
_READY_ECHO = encode_request(PacketType.ECHO_REQ, b"gearshift-bench-ready")


@dataclass(frozen=True)
class ChildSpec:
    """What one child process does.  ``slot`` indexes its progress counter."""

    role: str
    slot: int
    host: str
    port: int
    connections: int
    function: bytes
    payload_size: int = 100
    pipeline: int = 1
    #: bg: jobs this process submits in all (spread over its connections).
    jobs: int = 0
    #: Keep per-job completion times (and latencies for clients).
    record: bool = True
    verify: bool = True
    unique: bool = True
    connect_timeout: float = 30.0


@dataclass
class ChildReport:
    """What a child process measured, sent back to the parent once at the end."""

    role: str
    slot: int
    pid: int = 0
    jobs: int = 0
    errors: int = 0
    noops: int = 0
    connected: int = 0
    #: Jobs still unanswered when the child gave up waiting for them.
    unfinished: int = 0
    error_text: str = ""
    #: monotonic time at which each recorded job finished.
    done_at: array[float] = field(default_factory=lambda: array("d"))
    #: seconds from submit to result (clients only), same order as ``done_at``.
    latency: array[float] = field(default_factory=lambda: array("d"))


class Shared(NamedTuple):
    """The objects a child shares with the parent process."""

    progress: Any  # multiprocessing RawArray of c_int64, one slot per child
    flags: Any  # multiprocessing RawArray of c_int32: CLIENT_STOP, WORKER_STOP
    go: Event
    queue: Queue[tuple[Any, ...]]


def make_shared(ctx: Any, slots: int) -> Shared:
    """Create the shared objects for ``slots`` children from a multiprocessing context."""
    return Shared(
        ctx.RawArray(ctypes.c_int64, max(1, slots)),
        ctx.RawArray(ctypes.c_int32, 2),
        ctx.Event(),
        ctx.Queue(),
    )


def child_main(spec: ChildSpec, shared: Shared) -> None:
    """Entry point of a child process: run the role, then post its report."""
    parent = os.getppid()
    try:
        report = _run_loop(spec, shared, parent)
    except Exception as exc:  # noqa: BLE001 - the parent must hear about any failure
        shared.queue.put(("error", spec.slot, f"{type(exc).__name__}: {exc}"))
        return
    report.pid = os.getpid()
    shared.queue.put(("report", spec.slot, report))


def _run_loop(spec: ChildSpec, shared: Shared, parent: int) -> ChildReport:
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # the pure-asyncio loop works too, only slower
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_Group(spec, shared, parent).run())


class _Group:
    """The connections of one child process and what they measured."""

    def __init__(self, spec: ChildSpec, shared: Shared, parent: int) -> None:
        self.spec = spec
        self.shared = shared
        self.parent = parent
        self.report = ChildReport(spec.role, spec.slot)
        self.record = spec.record
        self.verify = spec.verify
        self.payload = bytes(spec.payload_size) if spec.payload_size else b""
        if spec.payload_size:
            # Not all zeros, so that a server that mangles data is caught.
            self.payload = (b"gearshift" * (spec.payload_size // 9 + 1))[: spec.payload_size]
        self.stopping = False
        self.conns: list[_Conn] = []
        self.finished: asyncio.Future[None] | None = None
        self.stop_deadline = 0.0

    # -- bookkeeping called by connections --------------------------------------------
    def fail(self, text: str) -> None:
        self.report.errors += 1
        if not self.report.error_text:
            self.report.error_text = text

    def lost(self, conn: _Conn, exc: Exception | None) -> None:
        if not self.stopping:
            self.fail(f"connection lost: {exc or 'closed by server'}")
        conn.closed = True
        if all(c.closed for c in self.conns):
            self.finish()

    def finish(self) -> None:
        if self.finished is not None and not self.finished.done():
            self.finished.set_result(None)

    def check_done(self) -> None:
        """Clients: finished when every connection is idle and no more work is due."""
        if all(c.done() for c in self.conns):
            self.finish()

    # -- the run ---------------------------------------------------------------------
    async def run(self) -> ChildReport:
        loop = asyncio.get_running_loop()
        self.finished = loop.create_future()
        spec = self.spec
        await self._connect_all(loop)
        self.report.connected = len(self.conns)
        try:
            await asyncio.wait_for(
                asyncio.gather(*(c.ready for c in self.conns)), spec.connect_timeout
            )
        except TimeoutError:
            ready = sum(c.ready.done() for c in self.conns)
            raise TimeoutError(
                f"{ready} of {len(self.conns)} {spec.role} connections answered the ready "
                f"ECHO_REQ within {spec.connect_timeout}s: {self.report.error_text or 'no error'}"
            ) from None
        self.shared.queue.put(("ready", spec.slot, os.getpid()))
        if spec.role in ("fg", "bg", "drain"):
            # Nothing arrives on these connections until they send, so blocking is safe.
            while not self.shared.go.wait(1.0):
                if os.getppid() != self.parent:
                    return self.report
        for conn in self.conns:
            conn.start()
        if spec.role in CLIENT_ROLES:
            self.check_done()
        ticker = loop.create_task(self._tick())
        try:
            await self.finished
        finally:
            ticker.cancel()
            self._publish()
            # From here on a closed connection is expected, not an error.
            self.stopping = True
            for conn in self.conns:
                if conn.transport is not None:
                    conn.transport.close()
        self.report.unfinished = sum(c.inflight for c in self.conns)
        return self.report

    def _publish(self) -> None:
        self.shared.progress[self.spec.slot] = self.report.jobs

    async def _tick(self) -> None:
        flags = self.shared.flags
        client = self.spec.role in CLIENT_ROLES
        while True:
            await asyncio.sleep(_TICK)
            self._publish()
            if os.getppid() != self.parent:
                self.stopping = True
                self.finish()
                return
            if client:
                if flags[CLIENT_STOP] and not self.stopping:
                    self.stopping = True
                    self.stop_deadline = time.monotonic() + _STOP_GRACE
                    self.check_done()
                elif self.stopping and time.monotonic() > self.stop_deadline:
                    self.finish()
            elif flags[WORKER_STOP]:
                self.stopping = True
                self.finish()

    async def _connect_all(self, loop: asyncio.AbstractEventLoop) -> None:
        spec = self.spec
        cls = _CLASSES[spec.role]
        gate = asyncio.Semaphore(_CONNECT_PARALLEL)
        deadline = time.monotonic() + spec.connect_timeout

        async def one(index: int) -> _Conn:
            async with gate:
                while True:
                    try:
                        _, proto = await loop.create_connection(
                            lambda: cls(self, index), spec.host, spec.port
                        )
                        return proto
                    except OSError:
                        # A full accept backlog (1,000 sleepers at once) refuses; retry.
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.05)

        self.conns = list(await asyncio.gather(*(one(i) for i in range(spec.connections))))


class _Conn(asyncio.Protocol, abc.ABC):
    """One connection; subclasses handle the packets of their role."""

    def __init__(self, group: _Group, index: int) -> None:
        self.g = group
        self.index = index
        self.decoder = Decoder(allow_admin=False)
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = False
        self.inflight = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.writelines(self.hello())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"lost before ready: {exc}"))
        self.g.lost(self, exc)

    def data_received(self, data: bytes) -> None:
        try:
            packets = self.decoder.feed(data)
        except GearmanError as exc:
            self.g.fail(f"undecodable reply: {exc}")
            assert self.transport is not None
            self.transport.abort()
            return
        out: list[bytes] = []
        self.handle(packets, out)
        if out and self.transport is not None:
            self.transport.writelines(out)

    def hello(self) -> list[bytes]:
        """The packets sent on connect; must end with the ready ECHO_REQ."""
        return [_READY_ECHO]

    def start(self) -> None:
        """Called once everyone is ready (and, for clients, on the go signal)."""

    def done(self) -> bool:
        """Clients: nothing in flight and nothing more to submit."""
        return True

    @abc.abstractmethod
    def handle(self, packets: list[Any], out: list[bytes]) -> None:
        """React to the packets of one data_received; append replies to ``out``."""

    def on_ready_echo(self, p: Packet) -> None:
        if not self.ready.done():
            self.ready.set_result(None)


class _Client(_Conn):
    """Shared by the fg and bg clients: pre-built submit packets with unique ids."""

    submit_type = _SUBMIT_JOB

    def __init__(self, group: _Group, index: int) -> None:
        super().__init__(group, index)
        spec = group.spec
        self.seq = 0
        # The unique id is 36 characters, like a UUID (and like shared/bench's gearbench):
        # 8 for the process and connection, 28 for the sequence number.
        uniq_len = 36 if spec.unique else 0
        body = len(spec.function) + 2 + uniq_len + len(group.payload)
        self.head = (
            encode_header(self.submit_type, body, REQ)
            + spec.function
            + b"\0"
            + (b"%07d-" % (spec.slot * 10000 + index) if spec.unique else b"")
        )
        self.tail = b"\0" + group.payload
        self.unique = spec.unique
        self.pending: deque[float] = deque()

    def submit(self, out: list[bytes], now: float) -> None:
        self.seq += 1
        out.append(self.head + b"%028d" % self.seq if self.unique else self.head)
        out.append(self.tail)
        self.pending.append(now)
        self.inflight += 1

    def start(self) -> None:
        """On the go signal: the first ``pipeline`` submits, as ``next`` allows them."""
        out: list[bytes] = []
        now = time.monotonic()
        for _ in range(self.g.spec.pipeline):
            self.next(out, now)
        if out:
            assert self.transport is not None
            self.transport.writelines(out)

    @abc.abstractmethod
    def next(self, out: list[bytes], now: float) -> None:
        """Submit the next job(s) if the run is not over."""

    def handle_error(self, p: Packet, out: list[bytes], now: float) -> None:
        # An ERROR answers a submit in place of JOB_CREATED.
        self.g.fail(f"ERROR {p.args[0]!r} {p.args[1]!r}")
        if self.pending:
            self.pending.popleft()
            self.inflight -= 1
            self.next(out, now)


class _FgClient(_Client):
    def __init__(self, group: _Group, index: int) -> None:
        super().__init__(group, index)
        self.running: dict[bytes, float] = {}

    def done(self) -> bool:
        return self.inflight == 0

    def next(self, out: list[bytes], now: float) -> None:
        g = self.g
        if not g.stopping:
            self.submit(out, now)
        elif self.inflight == 0:
            g.check_done()

    def handle(self, packets: list[Any], out: list[bytes]) -> None:
        now = time.monotonic()
        g = self.g
        report = g.report
        for p in packets:
            t = p.type
            if t == _WORK_COMPLETE:
                handle, data = p.args
                started = self.running.pop(handle, None)
                if started is None:
                    continue
                if g.verify and data != g.payload:
                    g.fail(f"wrong echo: {len(data)} bytes back for {len(g.payload)}")
                report.jobs += 1
                if g.record:
                    report.done_at.append(now)
                    report.latency.append(now - started)
                self.inflight -= 1
                self.next(out, now)
            elif t == _JOB_CREATED:
                self.running[p.args[0]] = self.pending.popleft()
            elif t == _WORK_FAIL or t == _WORK_EXCEPTION:
                if self.running.pop(p.args[0], None) is not None:
                    g.fail(f"job failed: {t}")
                    self.inflight -= 1
                    self.next(out, now)
            elif t == _ERROR:
                self.handle_error(p, out, now)
            elif t == _ECHO_RES:
                self.on_ready_echo(p)


class _BgClient(_Client):
    submit_type = _SUBMIT_JOB_BG

    def __init__(self, group: _Group, index: int) -> None:
        super().__init__(group, index)
        spec = group.spec
        # This connection's share of the process's jobs.
        share, extra = divmod(spec.jobs, spec.connections)
        self.remaining = share + (1 if index < extra else 0)

    def done(self) -> bool:
        return self.inflight == 0 and (self.remaining == 0 or self.g.stopping)

    def next(self, out: list[bytes], now: float) -> None:
        if self.remaining > 0 and not self.g.stopping:
            self.remaining -= 1
            self.submit(out, now)
        elif self.inflight == 0:
            self.g.check_done()

    def handle(self, packets: list[Any], out: list[bytes]) -> None:
        now = time.monotonic()
        g = self.g
        report = g.report
        for p in packets:
            t = p.type
            if t == _JOB_CREATED:
                started = self.pending.popleft()
                report.jobs += 1
                if g.record:
                    report.done_at.append(now)
                    report.latency.append(now - started)
                self.inflight -= 1
                self.next(out, now)
            elif t == _ERROR:
                self.handle_error(p, out, now)
            elif t == _ECHO_RES:
                self.on_ready_echo(p)


class _Worker(_Conn):
    """Echo worker: CAN_DO, GRAB_JOB; NO_JOB -> PRE_SLEEP; NOOP -> GRAB_JOB."""

    echo = True
    grab_at_start = True

    def hello(self) -> list[bytes]:
        hello = [encode_request(PacketType.CAN_DO, self.function()), _READY_ECHO]
        if self.grab_at_start:
            hello.append(_GRAB)
        return hello

    def function(self) -> bytes:
        return self.g.spec.function

    def handle(self, packets: list[Any], out: list[bytes]) -> None:
        g = self.g
        report = g.report
        for p in packets:
            t = p.type
            if t == _JOB_ASSIGN:
                handle, _, data = p.args
                if not self.echo:
                    data = b""
                out.append(encode_header(_WORK_COMPLETE, len(handle) + 1 + len(data), REQ))
                out.append(handle + b"\0")
                if data:
                    out.append(data)
                out.append(_GRAB)
                report.jobs += 1
                if g.record:
                    report.done_at.append(time.monotonic())
            elif t == _NO_JOB:
                out.append(_PRE_SLEEP)
            elif t == _NOOP:
                report.noops += 1
                out.append(_GRAB)
            elif t == _ECHO_RES:
                self.on_ready_echo(p)
            elif t == _ERROR:
                g.fail(f"ERROR {p.args[0]!r} {p.args[1]!r}")


class _Drain(_Worker):
    echo = False
    grab_at_start = False

    def start(self) -> None:
        assert self.transport is not None
        self.transport.write(_GRAB)


class _Idle(_Worker):
    """A sleeper: registers, sleeps, counts the NOOPs that wake it."""

    grab_at_start = False

    def hello(self) -> list[bytes]:
        return [encode_request(PacketType.CAN_DO, self.function()), _PRE_SLEEP, _READY_ECHO]


_CLASSES: dict[str, type[_Conn]] = {
    "fg": _FgClient,
    "bg": _BgClient,
    "worker": _Worker,
    "drain": _Drain,
    "idle": _Idle,
}
