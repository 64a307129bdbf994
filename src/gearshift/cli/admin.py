"""``gearshift admin``: gearadmin's flags and output, plus ``--json``, ``--watch`` and more.

Every gearadmin flag is accepted and prints what gearadmin prints: list replies as the
server sent them (final ``.`` included), ``OK value`` replies as ``value``, a bare ``OK``
as ``OK``, and ``ERR code text`` as ``Error: code text`` on stderr.  When several flags
are given the commands run in gearadmin's order (``--getpid`` first, ``--status`` last),
whatever order they were typed in.

Extras: ``--json`` prints the typed rows of the admin library as one JSON object;
``--watch [SECONDS]`` redraws a table of functions like gearman_top until Ctrl-C;
``--shutdown [--graceful]`` and ``--maxqueue F [N | H N L]`` send the commands gearadmin
has no flag for.  A command the server rejects makes the exit status 1 (gearadmin 1.1.20
exits 0 there; see docs/cli.md).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import logging
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from gearshift import AsyncAdminClient, AsyncMultiAdmin, FunctionStatus, ServerAddress
from gearshift.cli._common import (
    UsageError,
    connect_failure_reason,
    describe_error,
    is_tty,
    resolve_servers,
    tls_context,
    write_err,
    write_out,
)
from gearshift.errors import ConnectError, ConnectionLost, GearmanError, ServerError
from gearshift.protocol.adminreplies import check_token, maxqueue_command, sum_by_name

logger = logging.getLogger(__name__)

DEFAULT_WATCH_INTERVAL = 1.0

HELP = """\
usage: gearshift admin [options]

Options (as gearadmin):
  --help                         Show this help.
  -h [ --host ] arg (=localhost) Connect to the host (or a list: h1:4730,h2:4731)
  -p [ --port ] arg (=4730)      Port number or service to use for connection
  --server-version               Fetch the version number for the server.
  --server-verbose               Fetch the verbose setting for the server.
  --create-function arg          Create the function from the server.
  --cancel-job arg               Remove a given job from the server's queue
  --drop-function arg            Drop the function from the server.
  --show-unique-jobs             Show unique IDs of jobs on the server.
  --show-jobs                    Show all jobs on the server.
  --getpid                       Get Process ID for the server.
  --status                       Status for the server.
  --priority-status              Queued jobs status by priority.
  --workers                      Workers for the server.
  -S [ --ssl ]                   Enable SSL connections (CA and client certificate
                                 from GEARMAND_CA_CERTIFICATE, GEARMAN_CLIENT_PEM,
                                 GEARMAN_CLIENT_KEY; default: system trust store).

gearshift extras:
  --json                         Print typed rows as one JSON object.
  --watch [SECONDS] (=1)         Live table of functions (queued/running/workers)
                                 like gearman_top; Ctrl-C quits.
  --shutdown                     Ask the server to stop (gearmand >= 1.1.15 refuses).
  --graceful                     With --shutdown: finish running jobs first.
  --maxqueue F [N | H N L]       Limit the queue of function F (no size: reset).
  --show-stored-jobs [N] (=1000) List up to N jobs of the server's durable queue:
                                 key, function, unique, priority, epoch, size.
  --show-store                   Show the durable queue the server uses.
  --cluster                      Show the servers sharing its store: node, epoch,
                                 state, lease age, lease left, jobs, address.

With no -h/-p the GEARMAN_SERVERS environment variable is used, else localhost:4730.
"""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so main() owns exit codes and output."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; gearadmin's long options also work as ``--opt=value``."""
    p = _Parser(prog="gearshift admin", add_help=False, allow_abbrev=True)
    p.add_argument("--help", action="store_true")
    p.add_argument("-h", "--host", default=None)
    p.add_argument("-p", "--port", default=None)
    p.add_argument("--server-version", action="store_true")
    p.add_argument("--server-verbose", action="store_true")
    p.add_argument("--create-function", metavar="F")
    p.add_argument("--cancel-job", metavar="HANDLE")
    p.add_argument("--drop-function", metavar="F")
    p.add_argument("--show-unique-jobs", action="store_true")
    p.add_argument("--show-jobs", action="store_true")
    p.add_argument("--getpid", action="store_true")
    p.add_argument("--status", action="store_true")
    p.add_argument("--priority-status", action="store_true")
    p.add_argument("--workers", action="store_true")
    p.add_argument("-S", "--ssl", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--watch", nargs="?", type=float, const=DEFAULT_WATCH_INTERVAL, default=None)
    p.add_argument("--shutdown", action="store_true")
    p.add_argument("--graceful", action="store_true")
    p.add_argument("--maxqueue", nargs="+", metavar="ARG")
    p.add_argument("--show-stored-jobs", nargs="?", type=int, const=1000, default=None)
    p.add_argument("--show-store", action="store_true")
    p.add_argument("--cluster", action="store_true")
    return p


@dataclasses.dataclass(frozen=True)
class Op:
    """One admin command to run.

    Attributes:
        key: the JSON key (and the flag name with underscores).
        command: the admin command line sent in text mode.
        is_list: whether the reply is a ``.``-terminated list.
        typed: the library call that gives the typed value for ``--json``.
    """

    key: str
    command: str
    is_list: bool
    typed: Callable[[AsyncAdminClient], Awaitable[Any]]


def _maxqueue_size(values: list[str]) -> int | tuple[int, int, int] | None:
    sizes = values[1:]
    try:
        numbers = [int(v) for v in sizes]
    except ValueError:
        raise UsageError(f"--maxqueue sizes must be integers: {' '.join(sizes)}") from None
    if not numbers:
        return None
    if len(numbers) == 1:
        return numbers[0]
    if len(numbers) == 3:
        return (numbers[0], numbers[1], numbers[2])
    raise UsageError("--maxqueue takes F, F N or F HIGH NORMAL LOW")


def plan(args: argparse.Namespace) -> list[Op]:
    """The commands the flags ask for, in gearadmin's execution order.

    Raises:
        UsageError: a malformed argument (e.g. a function name with spaces).
    """
    ops: list[Op] = []
    try:
        if args.getpid:
            ops.append(Op("getpid", "getpid", False, lambda a: a.getpid()))
        if args.create_function is not None:
            f = check_token(args.create_function, "function")
            ops.append(
                Op("create_function", f"create function {f}", False, _ok(f, "create_function"))
            )
        if args.drop_function is not None:
            f = check_token(args.drop_function, "function")
            ops.append(Op("drop_function", f"drop function {f}", False, _ok(f, "drop_function")))
        if args.maxqueue is not None:
            f = check_token(args.maxqueue[0], "function")
            size = _maxqueue_size(args.maxqueue)
            ops.append(Op("maxqueue", maxqueue_command(f, size), False, _maxqueue(f, size)))
        if args.show_jobs:
            ops.append(Op("show_jobs", "show jobs", True, lambda a: a.show_jobs()))
        if args.show_unique_jobs:
            ops.append(
                Op("show_unique_jobs", "show unique jobs", True, lambda a: a.show_unique_jobs())
            )
        if args.cancel_job is not None:
            h = check_token(args.cancel_job, "handle")
            ops.append(Op("cancel_job", f"cancel job {h}", False, _ok(h, "cancel_job")))
        if args.server_verbose:
            ops.append(Op("server_verbose", "verbose", False, lambda a: a.verbose()))
        if args.server_version:
            ops.append(Op("server_version", "version", False, lambda a: a.version()))
        if args.workers:
            ops.append(Op("workers", "workers", True, lambda a: a.workers()))
        if args.priority_status:
            ops.append(Op("priority_status", "prioritystatus", True, lambda a: a.priority_status()))
        if args.status:
            ops.append(Op("status", "status", True, lambda a: a.status()))
        if args.show_store:
            ops.append(Op("show_store", "show store", True, lambda a: a.show_store()))
        if args.show_stored_jobs is not None:
            n = max(0, int(args.show_stored_jobs))
            ops.append(
                Op(
                    "show_stored_jobs",
                    f"show stored jobs {n}",
                    True,
                    lambda a: a.show_stored_jobs(n),
                )
            )
        if args.cluster:
            ops.append(Op("cluster", "cluster", True, lambda a: a.cluster()))
        if args.shutdown:
            graceful = bool(args.graceful)
            command = "shutdown graceful" if graceful else "shutdown"
            ops.append(Op("shutdown", command, False, _shutdown(graceful)))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return ops


def _ok(arg: str, method: str) -> Callable[[AsyncAdminClient], Awaitable[Any]]:
    async def call(admin: AsyncAdminClient) -> str:
        await getattr(admin, method)(arg)
        return "OK"

    return call


def _maxqueue(
    function: str, size: int | tuple[int, int, int] | None
) -> Callable[[AsyncAdminClient], Awaitable[Any]]:
    async def call(admin: AsyncAdminClient) -> str:
        await admin.maxqueue(function, size)
        return "OK"

    return call


def _shutdown(graceful: bool) -> Callable[[AsyncAdminClient], Awaitable[Any]]:
    async def call(admin: AsyncAdminClient) -> str:
        await admin.shutdown(graceful=graceful)
        return "OK"

    return call


# ---------------------------------------------------------------------------------------
# gearadmin-compatible text output


def render_reply(lines: list[str], is_list: bool) -> tuple[bytes, bytes]:
    """What gearadmin prints for one reply: (stdout bytes, stderr bytes).

    The library hands over reply lines without terminators; gearmand ends list lines
    with ``\\n`` and ``ERR`` lines with ``\\r\\n``, and gearadmin prints the reply after
    ``OK ``/``ERR `` verbatim, so those terminators are put back here.
    """
    first = lines[0] if lines else ""
    if first.startswith("ERR") and (not is_list or len(lines) == 1):
        return b"", b"Error: " + first[4:].encode() + b"\r\n"
    if is_list:
        return b"".join(line.encode() + b"\n" for line in lines) + b".\n", b""
    if first == "OK":
        return b"OK\n", b""
    if first.startswith("OK "):
        return first[3:].encode() + b"\n", b""
    return first.encode() + b"\n", b""


def _connect_error_text(exc: GearmanError, server: ServerAddress) -> bytes:
    if isinstance(exc, ConnectError):
        reason = connect_failure_reason(exc)
        if reason is not None:
            return f"Error: Failed to connect on {server} with {reason}\n".encode()
        return f"Error: Error connecting to {server.host}.\n".encode()
    return f"Error: {describe_error(exc)}\n".encode()


async def run_text(
    admin: AsyncAdminClient,
    ops: list[Op],
    out: Callable[[bytes], object] = write_out,
    err: Callable[[bytes], object] = write_err,
) -> int:
    """Run ``ops`` printing gearadmin's output; 1 if any was refused or failed."""
    code = 0
    for op in ops:
        try:
            lines = await admin.command(op.command)
        except ConnectionLost:
            if op.key == "shutdown":
                # The server went away as asked, before it could answer.
                out(b"OK\n")
                continue
            raise
        stdout, stderr = render_reply(lines, op.is_list)
        if stdout:
            out(stdout)
        if stderr:
            err(stderr)
            code = 1
    return code


# ---------------------------------------------------------------------------------------
# --json


def to_jsonable(value: Any) -> Any:
    """Library rows (frozen dataclasses) as plain dicts; status rows gain ``queued``."""
    if isinstance(value, list):
        return [to_jsonable(v) for v in value]
    if isinstance(value, tuple):
        return [to_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        row = {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, FunctionStatus):
            row["queued"] = value.queued
        return row
    return value


async def json_results(admin: AsyncAdminClient, ops: list[Op]) -> tuple[dict[str, Any], int]:
    """Run ``ops``: one JSON-ready object keyed by operation, and 1 if any was refused."""
    result: dict[str, Any] = {}
    code = 0
    for op in ops:
        try:
            result[op.key] = to_jsonable(await op.typed(admin))
        except ServerError as exc:
            result[op.key] = {"error": {"code": exc.code, "text": exc.text}}
            code = 1
    return result, code


async def run_json(admin: AsyncAdminClient, ops: list[Op]) -> int:
    """Run ``ops`` and print one JSON object keyed by operation; 1 if any was refused."""
    result, code = await json_results(admin, ops)
    write_out(json.dumps(result, indent=2).encode() + b"\n")
    return code


# ---------------------------------------------------------------------------------------
# --watch


def format_table(
    rows: list[FunctionStatus], server: ServerAddress | str, now: datetime.datetime
) -> str:
    """The gearman_top-style table: one line per function, sorted by name, plus totals."""
    rows = sorted(rows, key=lambda r: r.name)
    name_w = max([len("FUNCTION"), *(len(r.name) for r in rows)])
    head = f"{'FUNCTION':<{name_w}}  {'QUEUED':>8}  {'RUNNING':>8}  {'WORKERS':>8}"
    lines = [
        f"gearshift admin --watch  {server}  {now:%Y-%m-%d %H:%M:%S}",
        "",
        head,
        "-" * len(head),
    ]
    for r in rows:
        lines.append(f"{r.name:<{name_w}}  {r.queued:>8}  {r.running:>8}  {r.workers:>8}")
    lines.append("-" * len(head))
    queued = sum(r.queued for r in rows)
    running = sum(r.running for r in rows)
    lines.append(f"{f'{len(rows)} functions':<{name_w}}  {queued:>8}  {running:>8}  {'':>8}")
    return "\n".join(line.rstrip() for line in lines) + "\n"


#: Terminal control for --watch: clear once, then home the cursor and overwrite each line
#: (erasing its old tail) and everything below, so the table never flickers.
_CLEAR, _HOME, _ERASE_LINE, _ERASE_BELOW = b"\x1b[2J", b"\x1b[H", b"\x1b[K", b"\x1b[J"
_HIDE_CURSOR, _SHOW_CURSOR = b"\x1b[?25l", b"\x1b[?25h"


def redraw(table: str, first: bool) -> bytes:
    """The bytes that replace the previous table on a terminal with ``table``."""
    body = b"".join(line.encode() + _ERASE_LINE + b"\n" for line in table.splitlines())
    return (_HIDE_CURSOR + _CLEAR if first else b"") + _HOME + body + _ERASE_BELOW


async def run_watch(
    admin: AsyncAdminClient | AsyncMultiAdmin, interval: float, as_json: bool, stop: asyncio.Event
) -> int:
    """Redraw the function table every ``interval`` seconds until ``stop`` is set.

    On a terminal the table is redrawn in place; otherwise each refresh is printed after
    the previous one (one JSON object per line with ``--json``), so it can be logged.
    With several servers the table adds their rows up per function, and a server that
    does not answer is named under the table (and in ``errors`` with ``--json``).
    """
    tty = is_tty(sys.stdout) and not as_json
    first = True
    if isinstance(admin, AsyncMultiAdmin):
        label = ",".join(str(s) for s in admin.servers)
    else:
        label = str(admin.server)
    try:
        while not stop.is_set():
            errors: dict[str, str] = {}
            if isinstance(admin, AsyncMultiAdmin):
                answers = await admin.status()
                errors = {str(s): describe_error(e) for s, e in admin.errors(answers).items()}
                rows = sum_by_name(a for a in answers.values() if not isinstance(a, GearmanError))
            else:
                rows = await admin.status()
            now = datetime.datetime.now()
            if as_json:
                doc: dict[str, Any] = {"time": now.isoformat(timespec="seconds")}
                doc["server"] = label
                doc["status"] = to_jsonable(rows)
                if isinstance(admin, AsyncMultiAdmin):
                    doc["errors"] = errors
                write_out(json.dumps(doc).encode() + b"\n")
            else:
                table = format_table(rows, label, now)
                for name, reason in errors.items():
                    table += f"{name}: no answer ({reason})\n"
                if tty:
                    write_out(redraw(table, first))
                else:
                    write_out((b"" if first else b"\n") + table.encode())
            first = False
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                pass
    finally:
        if tty and not first:
            write_out(_SHOW_CURSOR)
    return 0


# ---------------------------------------------------------------------------------------
# several servers


async def _run_many(
    args: argparse.Namespace,
    servers: list[ServerAddress],
    ops: list[Op],
    tls: ssl.SSLContext | None,
) -> int:
    """The same commands on every server at once, printed server by server.

    Text output gives each server's replies, exactly as for one server, under a
    ``[host:port]`` line; ``--json`` gives one object keyed by server.
    """
    async with AsyncMultiAdmin(servers, tls=tls) as multi:
        if args.watch is not None:
            return await _watch_until_signal(multi, args)
        if args.json:
            answers = await multi.fan_out(lambda admin: json_results(admin, ops))
            doc: dict[str, Any] = {}
            code = 0
            for server, answer in answers.items():
                if isinstance(answer, GearmanError):
                    doc[str(server)] = {"error": {"text": describe_error(answer)}}
                    code = 1
                else:
                    doc[str(server)], one = answer
                    code = max(code, one)
            write_out(json.dumps(doc, indent=2).encode() + b"\n")
            return code

        # Each server's output is kept apart (stdout and stderr lines in order) and
        # printed under its header once all have answered.
        lines: dict[ServerAddress, list[tuple[bool, bytes]]] = {s: [] for s in multi.admins}

        def text(admin: AsyncAdminClient) -> Awaitable[int]:
            mine = lines[admin.server]
            return run_text(
                admin,
                ops,
                out=lambda b: mine.append((False, b)),
                err=lambda b: mine.append((True, b)),
            )

        codes = await multi.fan_out(text)
        for server, result in codes.items():
            if isinstance(result, GearmanError):
                lines[server].append((True, _connect_error_text(result, server)))
            write_out(f"[{server}]\n".encode())
            for to_err, data in lines[server]:
                (write_err if to_err else write_out)(data)
        return max(1 if isinstance(c, GearmanError) else c for c in codes.values())


async def _watch_until_signal(
    admin: AsyncAdminClient | AsyncMultiAdmin, args: argparse.Namespace
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await run_watch(admin, args.watch, args.json, stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


# ---------------------------------------------------------------------------------------


async def _run(
    args: argparse.Namespace, server: ServerAddress, ops: list[Op], tls: ssl.SSLContext | None
) -> int:
    async with AsyncAdminClient(server, tls=tls) as admin:
        try:
            if args.watch is not None:
                return await _watch_until_signal(admin, args)
            if args.json:
                return await run_json(admin, ops)
            return await run_text(admin, ops)
        except GearmanError as exc:
            write_err(_connect_error_text(exc, server))
            return 1


def main(argv: list[str]) -> int:
    """Run ``gearshift admin``; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.help:
            write_out(HELP.encode())
            return 0
        tls = tls_context(args.ssl)
        if args.graceful and not args.shutdown:
            raise UsageError("--graceful only goes with --shutdown")
        if args.watch is not None and args.watch <= 0:
            raise UsageError("--watch needs a positive number of seconds")
        ops = plan(args)
        if args.watch is not None and ops:
            raise UsageError("--watch cannot be combined with other commands")
        if not ops and args.watch is None:
            raise UsageError("No option execution operation given.")
        servers = resolve_servers(args.host, args.port)
    except UsageError as exc:
        write_err(f"gearshift admin: {exc}\n\n{HELP}".encode())
        return 1
    try:
        if len(servers) > 1:
            return asyncio.run(_run_many(args, servers, ops, tls))
        return asyncio.run(_run(args, servers[0], ops, tls))
    except KeyboardInterrupt:
        return 0
