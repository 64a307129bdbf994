"""Helpers shared by ``gearshift submit``, ``worker`` and ``admin``: flags, servers, output.

Nothing here speaks the Gearman protocol; that is the libraries' job.  These helpers
parse the flags ``submit`` and ``worker`` share and run their common start (usage,
pidfile), turn command-line host/port flags into server addresses, write raw bytes to
stdout and stderr in the right order, and draw a one-line progress indicator on a
terminal.
"""

from __future__ import annotations

import getopt
import os
import socket
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Final, Self, TypeVar

from gearshift.addresses import DEFAULT_PORT, SERVERS_ENV, ServerAddress, parse_servers
from gearshift.errors import ConfigError, ConnectError, GearmanError
from gearshift.tls import TLSFiles, client_context

#: gearman and gearadmin connect to this host when given no -h.
DEFAULT_HOST: Final = "localhost"


class UsageError(Exception):
    """A bad command line; the message is shown with the usage text."""


@dataclass
class JobOptions:
    """The flags ``gearshift submit`` and ``gearshift worker`` share, as ``gearman``'s
    client and worker modes do."""

    functions: list[str] = field(default_factory=list)
    host: str | None = None
    port: str | None = None
    per_line: bool = False
    strip_newline: bool = False
    pidfile: str | None = None
    verbose: bool = False
    help: bool = False
    ssl: bool = False

    def apply(self, opts: list[tuple[str, str]]) -> Self:
        """Apply getopt's ``(flag, value)`` pairs in order: the shared flags here, the
        others through ``own_flag``."""
        for flag, value in opts:
            if flag == "-f":
                self.functions.append(value)
            elif flag == "-h":
                self.host = value
            elif flag == "-p":
                self.port = value
            elif flag == "-n":
                self.per_line = True
            elif flag == "-N":
                self.per_line = self.strip_newline = True
            elif flag == "-i":
                self.pidfile = value
            elif flag == "-v":
                self.verbose = True
            elif flag in ("-H", "--help"):
                self.help = True
            elif flag == "-S":
                self.ssl = True
            else:
                self.own_flag(flag, value)
        return self

    def own_flag(self, flag: str, value: str) -> None:
        """Apply a flag only one of the commands has (each command's subclass)."""

    def own_check(self) -> None:
        """Refuse what only one of the commands cannot run (each command's subclass).

        Raises:
            UsageError: what it refuses.
        """


OptionsT = TypeVar("OptionsT", bound=JobOptions)


def job_main(
    name: str,
    usage: str,
    argv: list[str],
    parse: Callable[[list[str]], OptionsT],
    serve: Callable[[OptionsT, list[ServerAddress], ssl.SSLContext | None], int],
) -> int:
    """``gearshift submit`` and ``worker``: parse and check the flags, then ``serve``
    with the servers and TLS context they name, while the ``-i`` pidfile exists.

    ``-H`` prints ``usage`` and returns 0; a usage error prints it after the error and
    returns 1.  Otherwise ``serve``'s exit status is returned.
    """
    try:
        o = parse(argv)
        if o.help:
            write_out(usage.encode())
            return 0
        if not o.functions:
            raise UsageError("No Functions were provided")
        o.own_check()
        servers = resolve_servers(o.host, o.port)
        tls = tls_context(o.ssl)
    except UsageError as exc:
        write_err(f"gearshift {name}: {exc}\n\n{usage}".encode())
        return 1
    cleanup = write_pidfile(o.pidfile) if o.pidfile else None
    try:
        return serve(o, servers, tls)
    finally:
        if cleanup is not None:
            cleanup()


def getopt_flags(
    argv: list[str], short: str, long: list[str], *, gnu: bool
) -> tuple[list[tuple[str, str]], list[str]]:
    """``getopt`` (``gnu``: GNU getopt, where options may follow the arguments).

    Raises:
        UsageError: an unknown flag, a missing or malformed value.
    """
    try:
        if gnu:
            return getopt.gnu_getopt(argv, short, long)
        return getopt.getopt(argv, short, long)
    except getopt.GetoptError as exc:
        raise UsageError(str(exc)) from None


def write_pidfile(path: str) -> Callable[[], None]:
    """Write this process's id to ``path``; return what removes the file again."""
    with open(path, "w") as f:
        f.write(f"{os.getpid()}\n")

    def remove() -> None:
        try:
            os.unlink(path)
        except OSError:
            pass

    return remove


def _has_port(entry: str) -> bool:
    entry = entry.strip()
    if entry.startswith("["):
        return "]:" in entry
    return entry.count(":") == 1


def parse_port(text: str) -> int:
    """A port number, or a service name as getservbyname knows it (gearadmin accepts both).

    Raises:
        UsageError: neither a number in 1..65535 nor a known service.
    """
    text = text.strip()
    if text.isdigit():
        port = int(text)
        if 0 < port < 65536:
            return port
        raise UsageError(f"bad port {text!r}")
    try:
        return socket.getservbyname(text, "tcp")
    except OSError:
        raise UsageError(f"bad port {text!r}") from None


def resolve_servers(host: str | None, port: str | None) -> list[ServerAddress]:
    """Servers from ``-h``/``-p`` flags, falling back to ``GEARMAN_SERVERS``.

    ``-h`` takes one host or a ``GEARMAN_SERVERS``-style list (``h1:4730,h2``); ``-p`` is
    the port for entries that do not name their own.  With neither flag the
    ``GEARMAN_SERVERS`` environment variable is used, else ``localhost:4730``.

    Raises:
        UsageError: a malformed host or port.
    """
    default_port = DEFAULT_PORT if port is None else parse_port(port)
    if host is None:
        env = os.environ.get(SERVERS_ENV, "").strip()
        host = env if env and port is None else DEFAULT_HOST
    entries = [e.strip() for e in host.split(",") if e.strip()]
    if not entries:
        raise UsageError(f"no server in {host!r}")
    out: list[ServerAddress] = []
    try:
        for entry in entries:
            if _has_port(entry):
                out.extend(parse_servers(entry))
            else:
                bare = entry[1:-1] if entry.startswith("[") and entry.endswith("]") else entry
                out.append(ServerAddress(bare, default_port))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return list(dict.fromkeys(out))


#: libgearman's environment variables for ``-S``: the CA, and our certificate and key.
TLS_ENV: Final = ("GEARMAND_CA_CERTIFICATE", "GEARMAN_CLIENT_PEM", "GEARMAN_CLIENT_KEY")


def tls_context(enabled: bool) -> ssl.SSLContext | None:
    """The client TLS context for ``-S``/``--ssl``, from libgearman's environment variables.

    ``GEARMAND_CA_CERTIFICATE`` names the CA that signed the server (default: the system
    trust store); ``GEARMAN_CLIENT_PEM`` and ``GEARMAN_CLIENT_KEY`` a client certificate
    for servers that ask for one.  Built up front so a bad file is a usage error.

    Raises:
        UsageError: a file is missing or unreadable.
    """
    if not enabled:
        return None
    ca, cert, key = (os.environ.get(name) or None for name in TLS_ENV)
    try:
        return client_context(TLSFiles(ca=ca, cert=cert, key=key))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def write_out(data: bytes) -> None:
    """Write raw bytes to stdout at once (no newline translation)."""
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def write_err(data: bytes) -> None:
    """Write raw bytes to stderr, after anything already written to stdout."""
    sys.stdout.flush()
    sys.stderr.flush()
    sys.stderr.buffer.write(data)
    sys.stderr.buffer.flush()


def describe_error(exc: BaseException) -> str:
    """One line for an error the user should see, with the OS reason when there is one."""
    cause = exc.__cause__
    text = str(exc) or type(exc).__name__
    if isinstance(exc, GearmanError) and isinstance(cause, OSError) and cause.strerror:
        if cause.strerror not in text:
            text = f"{text} ({cause.strerror})"
    return text


def connect_failure_reason(exc: ConnectError) -> str | None:
    """The resolver's message when a ConnectError came from a failed name lookup."""
    cause = exc.__cause__
    if isinstance(cause, socket.gaierror):
        return cause.strerror or str(cause)
    return None


def is_tty(stream: IO[str]) -> bool:
    """True when ``stream`` is an interactive terminal."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """A one-line progress indicator redrawn in place on a terminal's stderr.

    It draws nothing unless ``stream`` is a TTY, so piped output and logs stay clean.
    Redraws are rate-limited to ``interval`` seconds.

    Args:
        label: what is being counted (``"jobs"``).
        stream: where to draw (stderr by default).
        interval: the shortest time between two redraws.
    """

    def __init__(self, label: str, *, stream: IO[str] | None = None, interval: float = 0.2) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = is_tty(self.stream)
        self.interval = interval
        self.done = 0
        self.failed = 0
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._drawn = False

    def update(self, done: int = 0, failed: int = 0, *, force: bool = False) -> None:
        """Count ``done`` more finished items (``failed`` of them failed) and maybe redraw."""
        self.done += done
        self.failed += failed
        if not self.enabled:
            return
        now = time.monotonic()
        if force or now - self._last_draw >= self.interval:
            self._last_draw = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        text = f"{self.done} {self.label}"
        if self.failed:
            text += f", {self.failed} failed"
        text += f", {rate:.1f}/s, {elapsed:.1f}s"
        # \r + erase-line keeps the cursor on one line however the text shrinks.
        self.stream.write(f"\r\x1b[K{text}")
        self.stream.flush()
        self._drawn = True

    def clear(self) -> None:
        """Erase the progress line so normal output continues on a clean line."""
        if self.enabled and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False

    def finish(self) -> None:
        """Draw the final counts, then move to a new line."""
        if self.enabled and self.done:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
