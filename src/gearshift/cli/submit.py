"""``gearshift submit``: libgearman's ``gearman`` client mode, over gearshift's AsyncClient.

Each workload (every argument, or all of stdin, or one line of stdin with ``-n``/``-N``)
is sent to every ``-f`` function at once, and all those jobs are awaited before the
next workload starts, as ``gearman`` does.  What the jobs send back is printed as
``gearman`` prints it: WORK_DATA and WORK_COMPLETE payloads raw on stdout, WORK_STATUS as
``N% Complete``, WORK_WARNING and exception payloads raw on stderr, WORK_FAIL as
``Job failed`` on stderr; ``-P`` prefixes each with ``function: ``.

The exit status is 1 when a job failed, raised an exception or timed out, or the server
could not be reached (``gearman`` 1.1.20 exits 0 for the last two).  With ``-b`` the
jobs are only queued; lines from stdin are then submitted many at a time (``-j`` sets
how many lines are in flight in either mode; output stays in input order).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from gearshift import AsyncClient, JobException, JobFailed, Priority, ServerAddress
from gearshift.cli._common import (
    JobOptions,
    Progress,
    UsageError,
    describe_error,
    getopt_flags,
    job_main,
    write_err,
    write_out,
)
from gearshift.errors import GearmanError, GearmanTimeout, ServerError

logger = logging.getLogger(__name__)

#: Background submits from ``-n`` input kept in flight at once.
BACKGROUND_WINDOW = 64

USAGE = """\
Client mode: gearshift submit [options] [<data> ...]
Worker mode: gearshift submit -w [options] [<command> [<args> ...]]  (= gearshift worker)

Common options:
\t-f <function> - Function name to use for jobs (can give many)
\t-h <host>     - Job server host (or a list: h1:4730,h2:4731; default GEARMAN_SERVERS)
\t-H            - Print this help menu
\t-v            - Print diagnostic information to stdout (the job handles)
\t-p <port>     - Job server port
\t-t <timeout>  - Timeout in milliseconds
\t-i <pidfile>  - Create a pidfile for the process
\t-S            - Enable SSL connections (files from GEARMAND_CA_CERTIFICATE,
\t                GEARMAN_CLIENT_PEM, GEARMAN_CLIENT_KEY)

Client options:
\t-b            - Run jobs in the background
\t-I            - Run jobs as high priority
\t-L            - Run jobs as low priority
\t-n            - Run one job per line
\t-N            - Same as -n, but strip off the newline
\t-P            - Prefix all output lines with functions names
\t-s            - Send job without reading from standard input
\t-u <unique>   - Unique key to use for job

gearshift extras:
\t-j, --jobs <n> - With -n/-N: keep up to n lines in flight (default 1, or 64 with -b);
\t                 output still comes in input order
"""

SHORT_OPTS = "bc:f:h:HILnNp:Pst:u:wi:dvSj:"
LONG_OPTS = ["help", "jobs="]


@dataclass
class SubmitOptions(JobOptions):
    """What the command line asked for."""

    background: bool = False
    priority: Priority = Priority.NORMAL
    prefix: bool = False
    no_input: bool = False
    unique: str | None = None
    timeout: float | None = None
    worker_mode: bool = False
    jobs: int | None = None
    data: list[str] = field(default_factory=list)

    def own_flag(self, flag: str, value: str) -> None:
        if flag == "-b":
            self.background = True
        elif flag == "-I":
            self.priority = Priority.HIGH
        elif flag == "-L":
            self.priority = Priority.LOW
        elif flag == "-P":
            self.prefix = True
        elif flag == "-s":
            self.no_input = True
        elif flag == "-u":
            self.unique = value
        elif flag == "-t":
            self.timeout = _timeout_ms(value)
        elif flag == "-w":
            self.worker_mode = True
        elif flag in ("-j", "--jobs"):
            self.jobs = _positive(flag, value)
        # -c and -d (worker mode's count and daemon) mean nothing to a client; gearman
        # accepts them, and so does this.


def parse_args(argv: list[str]) -> SubmitOptions:
    """Parse ``gearman``-style flags (GNU getopt: options may follow the data).

    Raises:
        UsageError: an unknown flag, a missing or malformed value.
    """
    opts, rest = getopt_flags(argv, SHORT_OPTS, LONG_OPTS, gnu=True)
    return SubmitOptions(data=rest).apply(opts)


def _positive(flag: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise UsageError(f"{flag} takes a positive number, not {value!r}")
    return number


def _timeout_ms(value: str) -> float | None:
    try:
        ms = int(value)
    except ValueError:
        raise UsageError(f"-t takes milliseconds, not {value!r}") from None
    # gearman treats a negative timeout as "wait forever".
    return None if ms < 0 else ms / 1000.0


class Printer:
    """Writes job output as ``gearman`` does, keeping a progress line out of the way."""

    def __init__(self, prefix: bool, progress: Progress | None) -> None:
        self.prefix = prefix
        self.progress = progress

    def _pre(self, function: str) -> bytes:
        return f"{function}: ".encode() if self.prefix else b""

    def _clear(self) -> None:
        if self.progress is not None:
            self.progress.clear()

    def out(self, function: str, data: bytes) -> None:
        """A payload (WORK_DATA, WORK_COMPLETE) on stdout."""
        self._clear()
        write_out(self._pre(function) + data)

    def err(self, function: str, data: bytes) -> None:
        """A warning, an exception payload or ``Job failed`` on stderr."""
        self._clear()
        write_err(self._pre(function) + data)

    def plain(self, data: bytes) -> None:
        """Diagnostic output on stdout, never prefixed."""
        self._clear()
        write_out(data)

    def plain_err(self, data: bytes) -> None:
        """An error message on stderr, never prefixed."""
        self._clear()
        write_err(data)

    def status(self, function: str, numerator: int, denominator: int) -> None:
        """WORK_STATUS as gearman prints it (integer percent; 0 for a zero denominator)."""
        percent = numerator * 100 // denominator if denominator else 0
        self.out(function, f"{percent}% Complete\n".encode())


async def run_workload(
    client: AsyncClient[bytes], o: SubmitOptions, data: bytes, printer: Printer
) -> bool:
    """Send ``data`` to every function and wait for all of them; False if any failed."""

    async def one(function: str) -> bool:
        try:
            if o.background:
                handle = await client.submit_background(
                    function, data, unique=o.unique, priority=o.priority
                )
                if o.verbose:
                    printer.plain(f"Task created: {handle}\n".encode())
                return True
            job = await client.submit_job(
                function,
                data,
                unique=o.unique,
                priority=o.priority,
                on_data=lambda chunk: printer.out(function, chunk),
                on_warning=lambda chunk: printer.err(function, chunk),
                on_status=lambda num, den: printer.status(function, num, den),
            )
            result = await job.result()
        except ServerError as exc:
            # Refused by the server (queue full, unique too long...): this job only.
            printer.plain_err(f"gearshift submit: {function}: {exc}\n".encode())
            return False
        except JobException as exc:
            printer.err(function, exc.payload)
            return False
        except JobFailed:
            printer.err(function, b"Job failed\n")
            return False
        printer.out(function, result)
        if o.verbose:
            printer.plain(f"Task created: {job.handle}\n".encode())
        return True

    # -t bounds the whole workload (submits and results), as gearman's timeout bounds its wait.
    async with asyncio.timeout(o.timeout):
        results = await asyncio.gather(*(one(f) for f in o.functions))
    return all(results)


async def _read_line(stream: BinaryIO) -> bytes:
    return await asyncio.get_running_loop().run_in_executor(None, stream.readline)


async def run(
    o: SubmitOptions, servers: list[ServerAddress], tls: ssl.SSLContext | None = None
) -> int:
    """Submit every workload; returns the exit status."""
    stdin = sys.stdin.buffer
    progress = Progress("jobs") if o.per_line and not o.data and not o.no_input else None
    printer = Printer(o.prefix, progress)
    ok = True
    async with AsyncClient(servers, timeout=o.timeout, tls=tls) as client:
        try:
            if o.data:
                for arg in o.data:
                    ok = await run_workload(client, o, os.fsencode(arg), printer) and ok
            elif o.no_input:
                ok = await run_workload(client, o, b"", printer)
            elif progress is not None:
                ok = await _per_line(client, o, stdin, printer, progress)
            else:
                data = await asyncio.get_running_loop().run_in_executor(None, stdin.read)
                ok = await run_workload(client, o, data, printer)
        except (GearmanError, OSError, TimeoutError) as exc:
            if progress is not None:
                progress.clear()
            if isinstance(exc, GearmanTimeout | TimeoutError):
                limit = f"{o.timeout:g}s" if o.timeout is not None else "the time limit"
                text = f"timeout: no result within {limit} (-t)"
            else:
                text = f"error: {describe_error(exc)}"
            write_err(f"gearshift submit: {text}\n".encode())
            return 1
        finally:
            if progress is not None:
                progress.finish()
    return 0 if ok else 1


class LineOutput(Printer):
    """The output of one stdin line's jobs while several lines are in flight (``-j``).

    The oldest unfinished line writes straight through; younger ones buffer what they
    print until every line before them is done, so the output is in input order, as
    if the lines had run one after another.
    """

    def __init__(self, printer: Printer) -> None:
        super().__init__(printer.prefix, printer.progress)
        self._printer = printer
        self._held: list[tuple[Callable[..., None], tuple[object, ...]]] | None = []

    def go_live(self) -> None:
        """Print what was held back, then write through."""
        held, self._held = self._held, None
        for method, args in held or ():
            method(*args)

    def out(self, function: str, data: bytes) -> None:
        self._emit(self._printer.out, function, data)

    def err(self, function: str, data: bytes) -> None:
        self._emit(self._printer.err, function, data)

    def plain(self, data: bytes) -> None:
        self._emit(self._printer.plain, data)

    def plain_err(self, data: bytes) -> None:
        self._emit(self._printer.plain_err, data)

    def _emit(self, method: Callable[..., None], *args: object) -> None:
        if self._held is None:
            method(*args)
        else:
            self._held.append((method, args))


async def _per_line(
    client: AsyncClient[bytes],
    o: SubmitOptions,
    stdin: BinaryIO,
    printer: Printer,
    progress: Progress,
) -> bool:
    """One workload per stdin line, up to ``-j`` lines in flight (64 for background jobs)."""

    def workload(line: bytes) -> bytes:
        if o.strip_newline and line.endswith(b"\n"):
            return line[:-1]
        return line

    window = o.jobs if o.jobs is not None else (BACKGROUND_WINDOW if o.background else 1)
    pending: deque[tuple[LineOutput, asyncio.Task[bool]]] = deque()
    ok = True

    async def finish_oldest() -> None:
        nonlocal ok
        _, task = pending[0]
        try:
            done = await task
        finally:
            pending.popleft()
            if pending:
                pending[0][0].go_live()
        ok = ok and done
        progress.update(1, 0 if done else 1)

    try:
        while line := await _read_line(stdin):
            while len(pending) >= window:
                await finish_oldest()
            output = LineOutput(printer)
            if not pending:
                output.go_live()
            task = asyncio.create_task(run_workload(client, o, workload(line), output))
            pending.append((output, task))
        while pending:
            await finish_oldest()
    finally:
        # Only after an error: stop the lines still in flight.
        for _, task in pending:
            task.cancel()
        await asyncio.gather(*(task for _, task in pending), return_exceptions=True)
    return ok


def main(argv: list[str]) -> int:
    """Run ``gearshift submit``; returns the exit status."""
    options = argv[: argv.index("--")] if "--" in argv else argv
    if "-w" in options:
        # `gearman -w ...` is worker mode; so is `gearshift submit -w ...` (worker takes -w).
        from gearshift.cli import worker

        return worker.main(argv)
    return job_main("submit", USAGE, argv, parse_args, _serve)


def _serve(o: SubmitOptions, servers: list[ServerAddress], tls: ssl.SSLContext | None) -> int:
    try:
        return asyncio.run(run(o, servers, tls))
    except KeyboardInterrupt:
        return 130
