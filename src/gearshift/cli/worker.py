"""``gearshift worker``: ``gearman -w`` over gearshift's AsyncWorker.

With a command (``gearshift worker -f F -- command args``) every job runs the command
with the workload on its stdin; what it prints becomes the result (WORK_COMPLETE), or,
with ``-n``/``-N``, one WORK_DATA per output line followed by an empty WORK_COMPLETE.
A command that exits non-zero fails the job (its output, if any, is sent as WORK_DATA
first), as ``gearman -w`` does.  Without a command the workload is written to stdout and
echoed back as the result.

``-c N`` exits after N jobs; ``--concurrency N`` runs up to N jobs at once.  SIGINT and
SIGTERM stop grabbing, let running jobs finish, and exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import ssl
import sys
from dataclasses import dataclass, field

from gearshift import AsyncWorker, ServerAddress, WorkerJob
from gearshift.cli._common import (
    JobOptions,
    UsageError,
    getopt_flags,
    job_main,
    write_err,
    write_out,
)
from gearshift.errors import GearmanError

logger = logging.getLogger(__name__)

USAGE = """\
Worker mode: gearshift worker [options] [--] [<command> [<args> ...]]

Options (as gearman -w):
\t-f <function> - Function name to register (can give many)
\t-h <host>     - Job server host (or a list: h1:4730,h2:4731; default GEARMAN_SERVERS)
\t-p <port>     - Job server port
\t-c <count>    - Number of jobs for worker to run before exiting
\t-n            - Send data packet for each line
\t-N            - Same as -n, but strip off the newline
\t-t <timeout>  - Per-job time limit in milliseconds (the command is killed, job fails)
\t-i <pidfile>  - Create a pidfile for the process
\t-v            - Print diagnostic information to stderr
\t-w            - Worker mode (accepted for gearman compatibility)
\t-S            - Enable SSL connections (files from GEARMAND_CA_CERTIFICATE,
\t                GEARMAN_CLIENT_PEM, GEARMAN_CLIENT_KEY)
\t-H, --help    - Print this help menu

gearshift extras:
\t--concurrency <n> - Run up to n jobs at once (default 1)
\t--client-id <id>  - Client id shown by `gearshift admin --workers`

Without a command each workload is written to stdout and echoed back as the result.
"""

SHORT_OPTS = "c:df:h:Hi:nNp:t:vwS"
LONG_OPTS = ["help", "concurrency=", "client-id="]


@dataclass
class WorkerOptions(JobOptions):
    """What the command line asked for."""

    count: int = 0
    timeout: float | None = None
    concurrency: int = 1
    client_id: str | None = None
    command: list[str] = field(default_factory=list)

    def own_flag(self, flag: str, value: str) -> None:
        if flag == "-c":
            self.count = _int("-c", value, 0)
        elif flag == "-t":
            ms = _int("-t", value, -1)
            self.timeout = ms / 1000.0 if ms > 0 else None
        elif flag == "--concurrency":
            self.concurrency = _int("--concurrency", value, 1)
        elif flag == "--client-id":
            self.client_id = value
        # -w (worker mode) and -d (daemon, not offered) need no action.

    def own_check(self) -> None:
        if self.command and shutil.which(self.command[0]) is None:
            raise UsageError(f"command not found: {self.command[0]}")


def _int(flag: str, value: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise UsageError(f"{flag} takes a number, not {value!r}") from None
    if number < minimum:
        raise UsageError(f"{flag} must be at least {minimum}")
    return number


def parse_args(argv: list[str]) -> WorkerOptions:
    """Parse ``gearman -w``-style flags; the command starts at the first non-option.

    Raises:
        UsageError: an unknown flag, a missing or malformed value.
    """
    opts, rest = getopt_flags(argv, SHORT_OPTS, LONG_OPTS, gnu=False)
    return WorkerOptions(command=rest).apply(opts)


class CommandRunner:
    """Runs the command for one job: workload in on stdin, output back as results."""

    def __init__(self, o: WorkerOptions) -> None:
        self.o = o
        #: Jobs inside the handler right now, and jobs finished so far.
        self.active = 0
        self.finished = 0
        #: Set once ``-c`` jobs have finished.
        self.limit_reached = asyncio.Event()

    async def __call__(self, job: WorkerJob[bytes]) -> bytes:
        """The job handler registered with AsyncWorker."""
        self.active += 1
        try:
            return await self._run(job)
        finally:
            self.active -= 1
            self.finished += 1
            if self.o.count and self.finished >= self.o.count:
                self.limit_reached.set()

    async def _run(self, job: WorkerJob[bytes]) -> bytes:
        data = job.raw
        if not self.o.command:
            write_out(data)
            return data
        proc = await asyncio.create_subprocess_exec(
            *self.o.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            if self.o.per_line:
                code = await self._lines(job, proc, data)
                out = b""
            else:
                out, _ = await proc.communicate(data)
                code = proc.returncode if proc.returncode is not None else await proc.wait()
        finally:
            if proc.returncode is None:
                # Cancelled (time limit or shutdown): do not leave the command running.
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if code != 0:
            logger.info("job %s: %s exited with %d", job.handle, self.o.command[0], code)
            if out:
                job.send_data(out)
            job.fail()
        return out

    async def _lines(
        self, job: WorkerJob[bytes], proc: asyncio.subprocess.Process, data: bytes
    ) -> int:
        assert proc.stdin is not None and proc.stdout is not None
        stdin = proc.stdin

        async def feed() -> None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                stdin.write(data)
                await stdin.drain()
            stdin.close()

        feeder = asyncio.create_task(feed())
        try:
            while line := await proc.stdout.readline():
                if self.o.strip_newline and line.endswith(b"\n"):
                    line = line[:-1]
                job.send_data(line)
        except BaseException:
            # Cancelled (time limit, shutdown): a feeder stuck on a full pipe must not
            # keep the caller from killing the command.
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
            raise
        await feeder
        return await proc.wait()


async def _work_counted(worker: AsyncWorker, runner: CommandRunner, count: int) -> None:
    """Exactly ``count`` jobs, one at a time (gearman -c).

    SIGTERM or SIGINT stop after the job in hand; a second SIGINT abandons it (the
    server requeues it when the connection closes).
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    interrupts = 0
    once: asyncio.Task[bool] | None = None

    def on_signal(signum: int) -> None:
        nonlocal interrupts
        interrupts += signum == signal.SIGINT
        stop.set()
        if once is not None and (interrupts >= 2 or not runner.active):
            once.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        done = 0
        while done < count and not stop.is_set():
            once = asyncio.create_task(worker.work_once())
            with contextlib.suppress(asyncio.CancelledError):
                if await once:
                    done += 1
            once = None
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def run(
    o: WorkerOptions, servers: list[ServerAddress], tls: ssl.SSLContext | None = None
) -> int:
    """Register the functions and work until -c jobs are done or a signal arrives."""
    runner = CommandRunner(o)
    worker = AsyncWorker(servers, client_id=o.client_id, concurrency=o.concurrency, tls=tls)
    for function in o.functions:
        worker.register(function, runner, timeout=o.timeout)
    async with worker:
        if o.count and o.concurrency == 1:
            await _work_counted(worker, runner, o.count)
        elif o.count:
            # Several at once: stop grabbing once the count is reached (jobs already
            # running still finish).
            async def watch() -> None:
                await runner.limit_reached.wait()
                await worker.stop(graceful=True)

            watcher = asyncio.create_task(watch())
            try:
                await worker.run()
            finally:
                watcher.cancel()
        else:
            await worker.run()
    return 0


def main(argv: list[str]) -> int:
    """Run ``gearshift worker``; returns the exit status."""
    return job_main("worker", USAGE, argv, parse_args, _serve)


def _serve(o: WorkerOptions, servers: list[ServerAddress], tls: ssl.SSLContext | None) -> int:
    if o.verbose:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    try:
        return asyncio.run(run(o, servers, tls))
    except GearmanError as exc:
        write_err(f"gearshift worker: {exc}\n".encode())
        return 1
    except KeyboardInterrupt:
        return 0
