"""Run one benchmark: start the child processes, time the window, merge what they measured.

How it works: ``run_bench(config)`` spawns child processes (``gearshift.bench.load``)
for the sleepers, the workers and the clients, in that order, and waits until every
connection of each has proved it is registered.  Then it releases the clients
(``go``), waits for ``warmup`` jobs, and opens the measured window ``[t0, t1]``:
``duration`` seconds, or until ``jobs`` more jobs have finished.  Around the window
it reads the server's CPU and memory from /proc (when it knows the server's pid),
every child's CPU, and the machine's busy time.  Then it stops the clients, lets them
collect the jobs still in flight, stops the workers, and computes jobs/s and
latency percentiles from the completion times the children recorded inside the
window.  Nothing is sampled: every job in the window counts.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from gearshift.bench.load import (
    CLIENT_STOP,
    WORKER_STOP,
    ChildReport,
    ChildSpec,
    Shared,
    child_main,
    make_shared,
)
from gearshift.bench.procfs import ManagedServer, ServerSnapshot, cpu_seconds, machine_busy

MODES = ("fg", "bg", "drain", "worker", "idle")


class BenchError(RuntimeError):
    """The benchmark could not run (no server, a child failed, a timeout)."""


@dataclass
class BenchConfig:
    """One benchmark run.  ``duration`` or ``jobs`` bounds the measured window.

    ``mode``: ``fg`` (clients submit SUBMIT_JOB to echo workers the bench starts),
    ``bg`` (SUBMIT_JOB_BG until ``jobs`` are queued, no worker), ``drain`` (workers
    take ``jobs`` queued jobs), ``worker`` / ``idle`` (only serve or sleep, for use
    with another load generator, until ``duration`` or Ctrl-C).
    """

    mode: str = "fg"
    host: str = "127.0.0.1"
    port: int = 4730
    function: str = "gearshift_bench"
    #: Function of the idle workers; None means the same as ``function``.
    idle_function: str | None = None
    size: int = 100
    clients: int = 16
    workers: int = 4
    idle: int = 0
    pipeline: int = 1
    duration: float | None = 10.0
    jobs: int | None = None
    warmup: int = 1000
    client_procs: int | None = None
    worker_procs: int | None = None
    verify: bool = True
    unique: bool = True
    connect_timeout: float = 60.0
    #: Hard cap on the whole run, a guard against a server that stops answering.
    timeout: float = 600.0

    def validate(self) -> None:
        """Raise ValueError for an inconsistent configuration."""
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if self.mode in ("bg", "drain") and not self.jobs:
            raise ValueError(f"--mode {self.mode} needs --jobs")
        if self.mode == "fg" and not self.jobs and not self.duration:
            raise ValueError("give --duration or --jobs")
        for name in ("clients", "workers", "pipeline"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.size < 0 or self.idle < 0 or self.warmup < 0:
            raise ValueError("size, idle and warmup must not be negative")


@dataclass
class BenchResult:
    """Everything a run measured; ``to_dict()`` is the ``--json`` output."""

    mode: str
    address: str
    config: dict[str, Any]
    jobs: int = 0
    seconds: float = 0.0
    jobs_per_s: float = 0.0
    p50_us: float | None = None
    p90_us: float | None = None
    p99_us: float | None = None
    p999_us: float | None = None
    max_us: float | None = None
    errors: int = 0
    error_text: str = ""
    unfinished: int = 0
    warmup_jobs: int = 0
    #: jobs/s in each tenth of the window's jobs (shows a rate that drifts with depth).
    rate_tenths: list[float] = field(default_factory=list)
    client_cpu_s: float = 0.0
    worker_cpu_s: float = 0.0
    idle_cpu_s: float = 0.0
    generator_processes: int = 0
    busy_pct: float = 0.0
    idle_connected: int = 0
    idle_noops: int = 0
    idle_jobs: int = 0
    noops_per_job: float | None = None
    server_pid: int | None = None
    server_cpu_s: float | None = None
    server_us_per_job: float | None = None
    server_hwm_kib: int | None = None
    server_rss_before_kib: int | None = None
    server_rss_after_kib: int | None = None
    #: bg: (RSS after - RSS before) / jobs, the memory one queued job costs.
    rss_per_job_bytes: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass
class Progress:
    """Handed to the progress callback a few times per second."""

    phase: str
    elapsed: float
    jobs: int
    jobs_per_s: float


ProgressCallback = Callable[[Progress], None]


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


def _split(total: int, parts: int) -> list[int]:
    share, extra = divmod(total, parts)
    return [share + (1 if i < extra else 0) for i in range(parts) if share or i < extra]


class _Children:
    """The child processes of one run and the messages they send."""

    def __init__(self, timeout: float) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        self.specs: list[ChildSpec] = []
        self.procs: list[Any] = []
        self.pids: dict[int, int] = {}
        self.reports: dict[int, ChildReport] = {}
        self.shared: Shared | None = None
        self.timeout = timeout

    def plan(self, specs: list[ChildSpec]) -> None:
        self.specs = specs
        self.shared = make_shared(self.ctx, len(specs))

    def launch(self, role_filter: tuple[str, ...], connect_timeout: float) -> None:
        """Start the children of these roles and wait until each is ready."""
        assert self.shared is not None
        started = []
        for spec in self.specs:
            if spec.role in role_filter:
                proc = self.ctx.Process(
                    target=child_main, args=(spec, self.shared), name=f"bench-{spec.role}"
                )
                proc.daemon = True
                proc.start()
                self.procs.append(proc)
                started.append(spec.slot)
        waiting = set(started)
        deadline = time.monotonic() + connect_timeout + 30.0
        while waiting:
            msg = self._get(deadline, "children to connect")
            if msg[0] == "ready":
                waiting.discard(msg[1])
                self.pids[msg[1]] = msg[2]

    def _get(self, deadline: float, what: str) -> tuple[Any, ...]:
        assert self.shared is not None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"timed out waiting for {what}")
            try:
                msg = self.shared.queue.get(timeout=min(left, 0.5))
            except queue.Empty:
                if any(p.exitcode not in (None, 0) for p in self.procs):
                    raise BenchError(f"a bench process died while waiting for {what}") from None
                continue
            if msg[0] == "error":
                raise BenchError(f"bench process {msg[1]} failed: {msg[2]}")
            if msg[0] == "report":
                self.reports[msg[1]] = msg[2]
            return msg

    def collect(self, slots: list[int], what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while any(s not in self.reports for s in slots):
            self._get(deadline, what)

    def progress(self, slots: list[int]) -> int:
        assert self.shared is not None
        return sum(int(self.shared.progress[s]) for s in slots)

    def cpu(self, slots: list[int]) -> float:
        return sum(cpu_seconds(self.pids[s]) for s in slots if s in self.pids)

    def close(self) -> None:
        if self.shared is not None:
            self.shared.flags[CLIENT_STOP] = 1
            self.shared.flags[WORKER_STOP] = 1
        for proc in self.procs:
            proc.join(5.0)
            if proc.is_alive():
                proc.terminate()
                proc.join(5.0)
        if self.shared is not None:
            self.shared.queue.close()
            self.shared.queue.join_thread()


@contextlib.contextmanager
def _children(timeout: float) -> Iterator[_Children]:
    kids = _Children(timeout)
    try:
        yield kids
    finally:
        kids.close()


def run_bench(
    config: BenchConfig,
    *,
    server: ManagedServer | None = None,
    progress: ProgressCallback | None = None,
) -> BenchResult:
    """Run one benchmark against ``config.host:config.port``.

    Args:
        config: what to run.
        server: the server process, when the caller started it; its CPU per job and
            memory are then measured from /proc.
        progress: called about four times a second while the run goes on.

    Returns:
        The figures of the measured window.

    Raises:
        BenchError: the server could not be reached or a bench process failed.
        ValueError: the configuration is inconsistent.
    """
    config.validate()
    ncpu = os.cpu_count() or 1
    fn = config.function.encode()
    idle_fn = (config.idle_function or config.function).encode()
    base: dict[str, Any] = dict(
        host=config.host, port=config.port, connect_timeout=config.connect_timeout
    )
    specs: list[ChildSpec] = []

    def add(role: str, count: int, procs: int, **kw: Any) -> list[int]:
        slots = []
        for conns in _split(count, max(1, min(procs, count))):
            spec = ChildSpec(role=role, slot=len(specs), connections=conns, **base, **kw)
            specs.append(spec)
            slots.append(spec.slot)
        return slots

    client_procs = config.client_procs or min(config.clients, ncpu)
    worker_procs = config.worker_procs or min(config.workers, ncpu)
    mode = config.mode
    idle_slots = (
        add("idle", config.idle, 1, function=idle_fn, payload_size=config.size, record=False)
        if config.idle and mode in ("fg", "idle")
        else []
    )
    worker_slots: list[int] = []
    client_slots: list[int] = []
    common: dict[str, Any] = dict(
        payload_size=config.size, verify=config.verify, unique=config.unique
    )
    if mode == "fg":
        worker_slots = add(
            "worker", config.workers, worker_procs, function=fn, record=False, **common
        )
        client_slots = add(
            "fg", config.clients, client_procs, function=fn, pipeline=config.pipeline, **common
        )
    elif mode == "worker":
        worker_slots = add(
            "worker", config.workers, worker_procs, function=fn, record=False, **common
        )
    elif mode == "drain":
        worker_slots = add("drain", config.workers, worker_procs, function=fn, **common)
    elif mode == "bg":
        assert config.jobs
        nprocs = max(1, min(client_procs, config.clients))
        for jobs, conns in zip(
            _split(config.jobs, nprocs), _split(config.clients, nprocs), strict=False
        ):
            spec = ChildSpec(
                role="bg",
                slot=len(specs),
                connections=conns,
                function=fn,
                pipeline=config.pipeline,
                jobs=jobs,
                **base,
                **common,
            )
            specs.append(spec)
            client_slots.append(spec.slot)

    result = BenchResult(mode, f"{config.host}:{config.port}", asdict(config))
    result.generator_processes = len(specs)
    with _children(config.timeout) as kids:
        kids.plan(specs)
        kids.launch(("idle",), config.connect_timeout)
        kids.launch(("worker", "drain"), config.connect_timeout)
        kids.launch(("fg", "bg"), config.connect_timeout)
        _measure(config, kids, result, server, progress, client_slots, worker_slots, idle_slots)
    return result


def _measure(
    config: BenchConfig,
    kids: _Children,
    result: BenchResult,
    server: ManagedServer | None,
    progress: ProgressCallback | None,
    client_slots: list[int],
    worker_slots: list[int],
    idle_slots: list[int],
) -> None:
    assert kids.shared is not None
    shared = kids.shared
    mode = config.mode
    counted = client_slots if mode in ("fg", "bg") else worker_slots
    deadline = time.monotonic() + config.timeout
    last_report = [0.0, 0]

    def tick(phase: str, t_start: float, base_jobs: int) -> int:
        now = time.monotonic()
        if now > deadline:
            raise BenchError(f"run exceeded its {config.timeout}s timeout during {phase}")
        if server is not None and not server.alive():
            raise BenchError(f"the server exited during {phase}:\n{server.log_tail()}")
        done = kids.progress(counted)
        if progress is not None and now - last_report[0] >= 0.25:
            rate = (done - last_report[1]) / (now - last_report[0]) if last_report[0] else 0.0
            last_report[0], last_report[1] = now, done
            progress(Progress(phase, now - t_start, done - base_jobs, rate))
        time.sleep(0.01)
        return done

    snap0: ServerSnapshot | None = server.snapshot() if server else None
    result.server_rss_before_kib = snap0.rss_kib if snap0 else None
    # Read the clock first: a child may finish a job before set() returns here.
    t_go = time.monotonic()
    shared.go.set()

    warm_jobs = 0
    if mode == "fg" and config.warmup:
        while tick("warmup", t_go, 0) < config.warmup:
            pass
    if mode == "fg":
        warm_jobs = kids.progress(counted)
    all_slots = client_slots + worker_slots + idle_slots
    t0 = time.monotonic()
    cpu0 = {s: kids.cpu([s]) for s in all_slots}
    if server is not None:
        snap0 = server.snapshot()
    busy0 = machine_busy()

    target = (warm_jobs + config.jobs) if config.jobs else None
    end_by = t0 + config.duration if config.duration else None
    phase = mode if mode not in ("worker", "idle") else "serving"
    try:
        while True:
            done = tick(phase, t0, warm_jobs)
            if target is not None and done >= target:
                break
            if end_by is not None and time.monotonic() >= end_by:
                break
    except KeyboardInterrupt:
        if mode not in ("worker", "idle"):
            raise
    t1 = time.monotonic()
    cpu1 = {s: kids.cpu([s]) for s in all_slots}
    busy1 = machine_busy()
    snap1 = server.snapshot() if server else None

    shared.flags[CLIENT_STOP] = 1
    kids.collect(client_slots, "clients to finish")
    shared.flags[WORKER_STOP] = 1
    kids.collect(worker_slots + idle_slots, "workers to finish")
    if mode == "bg" and server is not None:
        # The queued jobs' memory, once the last JOB_CREATED has been sent.
        time.sleep(0.2)
        snap1 = server.snapshot()

    def cpu_of(slots: list[int]) -> float:
        return round(sum(cpu1.get(s, 0.0) - cpu0.get(s, 0.0) for s in slots), 3)

    result.client_cpu_s = cpu_of(client_slots)
    result.worker_cpu_s = cpu_of(worker_slots)
    result.idle_cpu_s = cpu_of(idle_slots)
    if busy1[1] > busy0[1]:
        result.busy_pct = round(100.0 * (busy1[0] - busy0[0]) / (busy1[1] - busy0[1]), 1)

    reports = [kids.reports[s] for s in client_slots + worker_slots + idle_slots]
    result.errors = sum(r.errors for r in reports)
    result.error_text = next((r.error_text for r in reports if r.error_text), "")
    result.unfinished = sum(r.unfinished for r in reports)
    result.warmup_jobs = warm_jobs
    for s in idle_slots:
        result.idle_connected += kids.reports[s].connected
        result.idle_noops += kids.reports[s].noops
        result.idle_jobs += kids.reports[s].jobs
    total_client_jobs = sum(kids.reports[s].jobs for s in client_slots)
    if idle_slots and total_client_jobs:
        result.noops_per_job = round(result.idle_noops / total_client_jobs, 2)

    # Completion times inside the window (and latencies, for clients).
    pairs: list[tuple[float, float]] = []
    for s in counted:
        r = kids.reports[s]
        if r.latency:
            pairs.extend(zip(r.done_at, r.latency, strict=True))
        else:
            pairs.extend((d, 0.0) for d in r.done_at)
    pairs.sort()
    start = t0 if mode == "fg" else t_go
    pairs = [p for p in pairs if p[0] >= start]
    if config.jobs and mode != "worker":
        pairs = pairs[: config.jobs]
        end = pairs[-1][0] if pairs else t1
    else:
        end = t1
        pairs = [p for p in pairs if p[0] <= end]
    if mode in ("worker", "idle"):
        result.jobs = kids.progress(worker_slots + idle_slots)
        result.seconds = round(t1 - t0, 3)
    else:
        result.jobs = len(pairs)
        result.seconds = round(end - start, 4)
    if result.seconds > 0:
        result.jobs_per_s = round(result.jobs / result.seconds, 1)
    if pairs and mode in ("fg", "bg"):
        lat = sorted(p[1] for p in pairs)
        result.p50_us = round(percentile(lat, 50) * 1e6, 1)
        result.p90_us = round(percentile(lat, 90) * 1e6, 1)
        result.p99_us = round(percentile(lat, 99) * 1e6, 1)
        result.p999_us = round(percentile(lat, 99.9) * 1e6, 1)
        result.max_us = round(lat[-1] * 1e6, 1)
    if len(pairs) >= 20:
        tenth = len(pairs) // 10
        edges = [start] + [pairs[(k + 1) * tenth - 1][0] for k in range(10)]
        result.rate_tenths = [
            round(tenth / (edges[k + 1] - edges[k]), 1) if edges[k + 1] > edges[k] else 0.0
            for k in range(10)
        ]

    if server is not None and snap0 is not None and snap1 is not None:
        result.server_pid = server.pid
        result.server_cpu_s = round(snap1.cpu_s - snap0.cpu_s, 3)
        if result.jobs:
            result.server_us_per_job = round(result.server_cpu_s * 1e6 / result.jobs, 2)
        result.server_hwm_kib = snap1.hwm_kib
        result.server_rss_after_kib = snap1.rss_kib
        if mode == "bg" and result.jobs and result.server_rss_before_kib is not None:
            result.rss_per_job_bytes = round(
                (snap1.rss_kib - result.server_rss_before_kib) * 1024 / result.jobs, 1
            )
