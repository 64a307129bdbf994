"""Server configuration and gearmand's command line.

``parse_args(argv)`` accepts gearmand 1.1.20's options (short and long, boost style
``--opt=value`` too, and ``--config-file`` with whitespace-separated options) so that
gearshift can replace gearmand in existing init scripts.  Errors raise ``ConfigError``;
the CLI turns them into exit status 2.
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
from dataclasses import dataclass, field
from typing import Final, NoReturn

from gearshift.errors import ConfigError
from gearshift.protocol.packets import DEFAULT_MAX_PACKET_SIZE, MAX_PACKET_LIMIT
from gearshift.server.access import AccessPolicy
from gearshift.store import CLUSTER_FLAGS, STORE_FLAGS, UNSUPPORTED_STORE_FLAGS

VERBOSE_LEVELS: Final = (
    "FATAL",
    "ALERT",
    "CRITICAL",
    "ERROR",
    "WARNING",
    "NOTICE",
    "INFO",
    "DEBUG",
)

#: Queue flags collected into ``ServerConfig.queue_options`` (name without dashes):
#: gearmand's, per queue type, then gearshift's cluster flags.
QUEUE_FLAGS: Final = (
    *(flag for flags in STORE_FLAGS.values() for flag in flags),
    *UNSUPPORTED_STORE_FLAGS,
    *CLUSTER_FLAGS,
)
#: Queue flags that take no value.
QUEUE_SWITCHES: Final = ("store-queue-on-shutdown",)
#: ``--help`` texts of queue flags whose use is restricted.
_QUEUE_HELP: Final = {
    "libmemcached-servers": "not supported: refused at start (no memcached queue)",
    "libmemcached-prefix": "not supported: refused at start (no memcached queue)",
    "libtokyocabinet-file": "not supported: refused at start (no Tokyo Cabinet queue)",
    "libtokyocabinet-optimize": "not supported: refused at start (no Tokyo Cabinet queue)",
    "cluster-name": "share a PostgreSQL queue as a cluster (refused with any other queue)",
}


def default_handle_prefix() -> str:
    """gearmand's default: ``H:<nodename>``."""
    return "H:" + (os.uname().nodename or socket.gethostname() or "localhost")


@dataclass
class ServerConfig:
    """Everything a GearmanServer needs; defaults match gearmand where sensible."""

    port: int = 4730
    #: Address to listen on; ``None`` = every interface (IPv4 and IPv6).
    listen: str | None = None
    #: gearmand's default is 32; a larger backlog absorbs connection storms.
    backlog: int = 1024
    daemon: bool = False
    pid_file: str | None = None
    #: ``"stderr"``, ``"none"`` or a file path.
    log_file: str = "stderr"
    #: ``None`` = the project default store; otherwise a gearmand queue type or a URL.
    queue_type: str | None = None
    queue_options: dict[str, str] = field(default_factory=dict)
    #: -1 unlimited, 0 fail on the first lost worker, N allow N requeues (gearmand 2.0).
    job_retries: int = -1
    #: Sleeping workers woken per new job; 0 = all of them (gearmand's default).
    worker_wakeup: int = 1
    #: Seconds after which a job still queued after its NOOP wakes the next sleeping
    #: worker (the woken one may never grab); 0 = never.
    worker_wakeup_delay: float = 0.05
    #: Seconds a graceful shutdown (SIGUSR1, ``shutdown graceful``) waits for running
    #: and foreground jobs before it stops anyway; 0 = no limit.
    drain_timeout: float = 60.0
    #: Accepted for compatibility; round-robin is always on (gearmand 2.0).
    round_robin: bool = False
    handle_prefix: str = field(default_factory=default_handle_prefix)
    exceptions: bool = False
    keepalive: bool = False
    keepalive_idle: int = -1
    keepalive_interval: int = -1
    keepalive_count: int = -1
    verbose: str = "ERROR"
    threads: int = 4
    user: str | None = None
    file_descriptors: int = 0
    hashtable_buckets: int = 991
    syslog: bool = False
    coredump: bool = False
    #: ``-r http`` enables gearmand's HTTP protocol plugin.
    protocol: str | None = None
    http_port: int = 8080
    #: Run the HTTP listener (``-r http`` or ``--http-port``): submission, /metrics, /api.
    http: bool = False
    #: Address of the HTTP listener; ``None`` = the same as ``listen``.
    http_listen: str | None = None
    #: Access rules from the TOML file's ``[access]`` table (off by default).
    access: AccessPolicy = field(default_factory=AccessPolicy)
    #: The TOML configuration file (``--config``).
    config: str | None = None
    ssl: bool = False
    ssl_ca_file: str | None = None
    ssl_certificate: str | None = None
    ssl_key: str | None = None
    max_packet_size: int = DEFAULT_MAX_PACKET_SIZE
    #: Close connections that send nothing for this many seconds; ``None`` = never.
    idle_timeout: float | None = None
    #: Connections beyond this many are closed as soon as they are accepted; 0 = no cap.
    max_connections: int = 0
    #: Bytes buffered for a peer that does not read before its input is paused.
    write_high_water: int = 4 * 1024 * 1024
    config_file: str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.max_packet_size <= MAX_PACKET_LIMIT:
            raise ConfigError(f"max packet size must be 1..{MAX_PACKET_LIMIT}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"invalid port {self.port}")
        level = self.verbose.upper()
        if level not in VERBOSE_LEVELS:
            raise ConfigError(
                f"invalid verbose level {self.verbose!r} (one of {', '.join(VERBOSE_LEVELS)})"
            )
        self.verbose = level
        if self.job_retries < -1:
            raise ConfigError("job retries must be -1 (unlimited) or more")
        if self.worker_wakeup < 0:
            raise ConfigError("worker wakeup must be 0 (all) or more")
        if not 0 <= self.worker_wakeup_delay <= 3600:
            raise ConfigError("worker wakeup delay must be 0 (never) to 3600 seconds")
        if not 0 <= self.drain_timeout <= 86400:
            raise ConfigError("drain timeout must be 0 (no limit) to 86400 seconds")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser for gearmand's options (``gearshift server --help``)."""
    p = _Parser(
        prog="gearshift server",
        description="A Gearman job server; accepts gearmand's command-line options.",
        allow_abbrev=False,
        add_help=False,
    )
    g = p.add_argument_group("general (gearmand)")
    g.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    g.add_argument("-b", "--backlog", type=_int, help="listen backlog")
    g.add_argument("-d", "--daemon", action="store_true", help="run in the background")
    g.add_argument("--exceptions", action="store_true", help="enable exceptions for all")
    g.add_argument("-f", "--file-descriptors", type=_int, help="raise RLIMIT_NOFILE")
    g.add_argument("-j", "--job-retries", type=_int, help="-1 unlimited, 0 none, N")
    g.add_argument("--job-handle-prefix", help="job handles are PREFIX:N")
    g.add_argument("--hashtable-buckets", type=_int, help="accepted, unused")
    g.add_argument("--keepalive", action="store_true", help="TCP keepalive on connections")
    g.add_argument("--keepalive-idle", type=_int)
    g.add_argument("--keepalive-interval", type=_int)
    g.add_argument("--keepalive-count", type=_int)
    g.add_argument("-l", "--log-file", help="file, 'stderr' or 'none'")
    g.add_argument("-L", "--listen", help="address to listen on (default: all)")
    g.add_argument("-p", "--port", type=_int, help="port (default 4730)")
    g.add_argument("-P", "--pid-file", help="write the process id here")
    g.add_argument("-r", "--protocol", help="extra protocol plugin ('http')")
    g.add_argument("-R", "--round-robin", action="store_true", help="accepted; always on")
    g.add_argument(
        "-q",
        "--queue-type",
        help="builtin, libsqlite3, Postgres, MySQL, redis"
        " (libmemcached and libtokyocabinet are refused at start)",
    )
    g.add_argument("--queue", dest="queue_url", help="store URL (sqlite:///f, redis://...)")
    g.add_argument("--config-file", help="file of whitespace-separated options")
    g.add_argument("--config", help="TOML configuration file (flags override it)")
    g.add_argument("--syslog", action="store_true")
    g.add_argument("--coredump", action="store_true")
    g.add_argument("-t", "--threads", type=_int, help="accepted; one event loop")
    g.add_argument("-u", "--user", help="switch to this user after binding")
    g.add_argument("--verbose", help="FATAL ALERT CRITICAL ERROR WARNING NOTICE INFO DEBUG")
    g.add_argument("-V", "--version", action="store_true", help="print the version and exit")
    g.add_argument("-w", "--worker-wakeup", type=_int, help="NOOPs per job, 0 = all")
    g.add_argument(
        "--worker-wakeup-delay",
        type=_seconds,
        help="seconds before a job still queued after its NOOP wakes the next worker"
        " (default 0.05; 0 = never)",
    )
    g.add_argument(
        "--drain-timeout",
        type=_seconds,
        help="graceful shutdown (SIGUSR1): seconds to wait for running jobs"
        " (default 60; 0 = no limit)",
    )
    g.add_argument("--check-args", action="store_true", help="parse options, then exit 0")
    g.add_argument("--max-packet-size", type=_int, help="largest packet body")
    g.add_argument("--idle-timeout", type=float, help="close silent connections (seconds)")
    g.add_argument("--max-connections", type=_int, help="refuse connections beyond N (0: no cap)")
    s = p.add_argument_group("TLS and HTTP")
    s.add_argument("--ssl", action="store_true")
    s.add_argument("--ssl-ca-file")
    s.add_argument("--ssl-certificate")
    s.add_argument("--ssl-key")
    s.add_argument("--http-port", type=_int, help="HTTP listener port (enables it)")
    s.add_argument("--http-listen", help="HTTP listener address (default: -L's)")
    q = p.add_argument_group("queue plugins")
    for name in QUEUE_FLAGS:
        q.add_argument(f"--{name}", dest="q_" + name.replace("-", "_"), help=_QUEUE_HELP.get(name))
    for name in QUEUE_SWITCHES:
        q.add_argument(f"--{name}", dest="q_" + name.replace("-", "_"), action="store_true")
    return p


def read_config_file(path: str) -> list[str]:
    """gearmand's config file: options separated by whitespace, ``#`` comments."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    words: list[str] = []
    for line in text.splitlines():
        words += shlex.split(line, comments=True)
    return words


#: Settings that take the value of the flag of the same name (a switch, or an option
#: whose setting defaults to None).
_COPIED = (
    "daemon",
    "pid_file",
    "round_robin",
    "exceptions",
    "keepalive",
    "user",
    "syslog",
    "coredump",
    "protocol",
    "ssl",
    "http_listen",
    "config",
)
#: Settings the flag of the same name changes only when it is given; otherwise they keep
#: their default.
_GIVEN = (
    "listen",
    "backlog",
    "log_file",
    "job_retries",
    "worker_wakeup",
    "worker_wakeup_delay",
    "drain_timeout",
    "keepalive_idle",
    "keepalive_interval",
    "keepalive_count",
    "verbose",
    "threads",
    "file_descriptors",
    "hashtable_buckets",
    "http_port",
    "max_packet_size",
)


@dataclass
class ParsedArgs:
    """The command line's result: a config plus the CLI-only switches."""

    config: ServerConfig
    help: bool = False
    version: bool = False
    check_args: bool = False


def parse_args(argv: list[str]) -> ParsedArgs:
    """Parse gearmand-style flags.

    Raises:
        ConfigError: unknown flag, bad value, unreadable config file.
    """
    parser = build_parser()
    ns = parser.parse_args(argv)
    config_file = ns.config_file
    toml_words: list[str] = []
    access = None
    if ns.config is not None:
        from gearshift.server.configfile import load_toml

        toml_words, access = load_toml(ns.config, parser)
    if config_file is not None or toml_words:
        # Options from the files come first so the command line overrides them.
        gearmand_words = read_config_file(config_file) if config_file is not None else []
        ns = parser.parse_args(toml_words + gearmand_words + argv)
    cfg = ServerConfig()
    if ns.port is not None:
        cfg.port = ns.port
    elif os.environ.get("GEARMAND_PORT", "").isdigit():
        cfg.port = int(os.environ["GEARMAND_PORT"])
    for name in _COPIED:
        setattr(cfg, name, getattr(ns, name))
    for name in _GIVEN:
        value = getattr(ns, name)
        if value is not None:
            setattr(cfg, name, value)
    if ns.queue_type is not None and ns.queue_url is not None:
        raise ConfigError("give either -q/--queue-type or --queue, not both")
    cfg.queue_type = ns.queue_url if ns.queue_url is not None else ns.queue_type
    options: dict[str, str] = {}
    for name in QUEUE_FLAGS:
        value = getattr(ns, "q_" + name.replace("-", "_"))
        if value is not None:
            options[name] = value
    for name in QUEUE_SWITCHES:
        if getattr(ns, "q_" + name.replace("-", "_")):
            options[name] = "true"
    cfg.queue_options = options
    if ns.job_handle_prefix is not None:
        cfg.handle_prefix = ns.job_handle_prefix
    cfg.ssl_ca_file = ns.ssl_ca_file or os.environ.get("GEARMAND_CA_CERTIFICATE")
    cfg.ssl_certificate = ns.ssl_certificate or os.environ.get("GEARMAND_SERVER_PEM")
    cfg.ssl_key = ns.ssl_key or os.environ.get("GEARMAND_SERVER_KEY")
    if ns.idle_timeout is not None:
        cfg.idle_timeout = ns.idle_timeout if ns.idle_timeout > 0 else None
    if ns.max_connections is not None:
        cfg.max_connections = max(0, ns.max_connections)
    cfg.config_file = config_file
    cfg.http = ns.http_port is not None or (ns.protocol or "").lower() == "http"
    if access is not None:
        cfg.access = access
    cfg.__post_init__()
    return ParsedArgs(cfg, help=ns.help, version=ns.version, check_args=ns.check_args)
