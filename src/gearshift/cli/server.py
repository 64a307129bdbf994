"""``gearshift server``: the job server, accepting gearmand's command line.

Exit status: 0 after a clean shutdown, 1 when the server cannot start (address in use,
store unavailable), 2 for a bad command line.  Signals: SIGTERM/SIGINT stop at once,
SIGUSR1 stops gracefully (stop listening, exit when no job is left), SIGHUP reopens
the log file, SIGPIPE is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import resource
import signal
import sys
from collections.abc import Iterator
from typing import TextIO

from gearshift._version import __version__
from gearshift.build import build_server
from gearshift.errors import ConfigError, GearmanError
from gearshift.server.config import ParsedArgs, ServerConfig, build_parser, parse_args
from gearshift.store import open_store

logger = logging.getLogger(__name__)

_LEVELS = {
    "FATAL": logging.CRITICAL,
    "ALERT": logging.CRITICAL,
    "CRITICAL": logging.CRITICAL,
    "ERROR": logging.ERROR,
    "WARNING": logging.WARNING,
    "NOTICE": logging.INFO,
    "INFO": logging.INFO,
    "DEBUG": logging.DEBUG,
}
_FORMAT = "  %(levelname)s %(asctime)s [%(name)s] %(message)s"


class LogFile:
    """The log destination; ``reopen()`` (SIGHUP) reopens a file after rotation."""

    def __init__(self, config: ServerConfig) -> None:
        self.path: str | None = None
        self.handler: logging.Handler | None = None
        target = config.log_file
        if target.lower() == "none":
            self.handler = logging.NullHandler()
        elif target.lower() == "stderr":
            self.handler = logging.StreamHandler(sys.stderr)
        else:
            self.path = target
            self.handler = logging.StreamHandler(self._open())
        self.handler.setFormatter(logging.Formatter(_FORMAT))
        root = logging.getLogger()
        root.addHandler(self.handler)
        self.syslog: logging.Handler | None = None
        if config.syslog:
            # gearmand --syslog: also log to the local syslog daemon (if there is one).
            from logging.handlers import SysLogHandler

            address = "/dev/log" if os.path.exists("/dev/log") else ("localhost", 514)
            self.syslog = SysLogHandler(address=address)
            self.syslog.setFormatter(logging.Formatter("gearshift[%(process)d]: %(message)s"))
            root.addHandler(self.syslog)
        level = _LEVELS[config.verbose]
        logging.getLogger("gearshift").setLevel(level)
        root.setLevel(level)

    def _open(self) -> TextIO:
        assert self.path is not None
        try:
            return open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        except OSError as exc:
            raise ConfigError(f"cannot open log file {self.path}: {exc.strerror}") from exc

    def reopen(self) -> None:
        if self.path is None or not isinstance(self.handler, logging.StreamHandler):
            return
        try:
            stream = self._open()
        except ConfigError as exc:
            logger.error("%s", exc)
            return
        old = self.handler.setStream(stream)
        if old is not None:
            old.close()
        logger.info("reopened log file %s", self.path)

    def close(self) -> None:
        if self.syslog is not None:
            logging.getLogger().removeHandler(self.syslog)
            self.syslog.close()
        if self.handler is not None:
            logging.getLogger().removeHandler(self.handler)
            self.handler.close()


def _daemonize() -> None:
    """Classic double fork; stdin/stdout/stderr go to /dev/null."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    fd = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(fd, target)
    if fd > 2:
        os.close(fd)


@contextlib.contextmanager
def _pid_file(path: str | None) -> Iterator[None]:
    if path is None:
        yield
        return
    try:
        # Written whole or not at all: watchers never read a half-written file.
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="ascii") as fh:
            fh.write(f"{os.getpid()}\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(f"cannot write pid file {path}: {exc.strerror}") from exc
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and wanted > hard:
        raise ConfigError(f"--file-descriptors {wanted} is above the hard limit {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _switch_user(name: str) -> None:
    import pwd

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(f"unknown user {name!r}") from None
    if os.getuid() == entry.pw_uid:
        return
    try:
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    except PermissionError:
        raise ConfigError(f"cannot switch to user {name!r}: not running as root") from None


def _check_unsupported(cfg: ServerConfig) -> None:
    """Refuse settings that cannot work, before the server daemonizes or opens anything.

    Raises:
        ConfigError: one line saying what is wrong (the caller exits with status 2).
    """
    # Builds the store without connecting or touching a file: every store setting
    # that cannot work (a cluster on SQLite/Redis/MySQL, -q libmemcached, a bad URL
    # option, a missing driver) is a command-line error, not a failure at start.
    open_store(cfg.queue_type, cfg.queue_options)
    if cfg.protocol is not None and cfg.protocol.lower() != "http":
        raise ConfigError(f"unknown protocol {cfg.protocol!r} (only 'http' exists)")
    if cfg.ssl:
        # Load the files now so that a bad certificate is a command-line error.
        from gearshift.tls import server_context

        server_context(
            cfg.ssl_certificate or "/etc/ssl/certs/gearmand.pem",
            cfg.ssl_key or "/etc/ssl/certs/gearmand.key",
            cfg.ssl_ca_file,
        )
    if cfg.http:
        try:
            import aiohttp  # noqa: F401
            import prometheus_client  # noqa: F401
        except ImportError as exc:
            raise ConfigError(
                f"the HTTP listener needs the 'http' extra (pip install gearshift[http]): {exc}"
            ) from exc


def _tune_gc() -> None:
    """Keep the cyclic GC off the hot path.

    Jobs, packets and connections almost never form reference cycles, yet with the
    default thresholds every full collection walks every queued job: with 200k queued
    jobs that is 40 % of the server's time and pauses of 400 ms (perf-findings.md).
    Objects alive after start-up (imports, replayed jobs) are frozen out of the GC,
    and collections run less often; the rare cycles are still collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


async def _run(cfg: ServerConfig, log: LogFile) -> int:
    server = build_server(cfg)
    loop = asyncio.get_running_loop()
    # Handlers go in before the listener opens: whoever sees the port may signal us.
    loop.add_signal_handler(signal.SIGTERM, server.request_shutdown, False)
    loop.add_signal_handler(signal.SIGINT, server.request_shutdown, False)
    loop.add_signal_handler(signal.SIGUSR1, server.request_shutdown, True)
    loop.add_signal_handler(signal.SIGHUP, log.reopen)
    try:
        try:
            await server.start()
        except (OSError, GearmanError) as exc:
            logger.critical("cannot start: %s", exc)
            print(f"gearshift server: {exc}", file=sys.stderr)
            return 1
        _tune_gc()
        await server.serve_forever()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP):
            loop.remove_signal_handler(sig)
    logger.info("shut down")
    return 0


def _event_loop_run(cfg: ServerConfig, log: LogFile) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_run(cfg, log))
    result: int = uvloop.run(_run(cfg, log))
    return result


def main(argv: list[str]) -> int:
    """Run the server; returns the process exit status."""
    try:
        parsed: ParsedArgs = parse_args(argv)
    except ConfigError as exc:
        print(f"gearshift server: {exc}", file=sys.stderr)
        print("Try `gearshift server --help' for the options.", file=sys.stderr)
        return 2
    if parsed.help:
        build_parser().print_help()
        return 0
    if parsed.version:
        print(f"\ngearshift {__version__} (gearmand-compatible server)")
        return 0
    cfg = parsed.config
    try:
        _check_unsupported(cfg)
    except ConfigError as exc:
        print(f"gearshift server: {exc}", file=sys.stderr)
        return 2
    if parsed.check_args:
        return 0
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        if cfg.file_descriptors:
            _raise_fd_limit(cfg.file_descriptors)
        if cfg.coredump:
            # gearmand --coredump: allow core files up to the hard limit.
            hard = resource.getrlimit(resource.RLIMIT_CORE)[1]
            resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))
        if cfg.daemon:
            _daemonize()
        log = LogFile(cfg)
    except (ConfigError, OSError) as exc:
        print(f"gearshift server: {exc}", file=sys.stderr)
        return 1
    try:
        with _pid_file(cfg.pid_file):
            if cfg.user:
                _switch_user(cfg.user)
            return _event_loop_run(cfg, log)
    except ConfigError as exc:
        logger.critical("%s", exc)
        print(f"gearshift server: {exc}", file=sys.stderr)
        return 1
    finally:
        log.close()
