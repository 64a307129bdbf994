"""``gearshift server`` command line, as gearmand's (checklist 27, 28), in subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gearshift import __version__
from gearshift.errors import ConfigError
from gearshift.server.config import parse_args
from tests.procs import Gearshift, free_port, wait_listening

SERVER = [sys.executable, "-m", "gearshift", "server"]


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERVER, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def talk(port: int, data: bytes, expect: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        got = b""
        while len(got) < expect:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def wait_exit(proc: subprocess.Popen[bytes], timeout: float = 20) -> int:
    return proc.wait(timeout)


def test_checklist_27_parse_every_gearmand_flag() -> None:
    parsed = parse_args(
        [
            "-p", "4731", "-L", "127.0.0.1", "-b", "64", "-d", "-P", "/tmp/p.pid",
            "-l", "none", "-q", "libsqlite3", "--libsqlite3-db", "/tmp/q.db",
            "--libsqlite3-table", "t", "--store-queue-on-shutdown", "-j", "3", "-w", "2", "-R",
            "--job-handle-prefix", "X", "--exceptions", "--keepalive", "--keepalive-idle=10",
            "--keepalive-interval", "5", "--keepalive-count=3", "--verbose", "info",
            "-t", "0", "-u", "nobody", "-f", "1000", "--hashtable-buckets", "7",
            "--syslog", "--coredump", "--http-port=8081", "--ssl-ca-file", "ca",
            "--ssl-certificate", "c", "--ssl-key", "k", "--max-packet-size", "1024",
            "--mysql-host", "h", "--mysql-port", "3307", "--mysql-user", "u",
            "--mysql-password", "pw", "--mysql-db", "d", "--mysql-table", "mt",
            "--redis-server", "r", "--redis-port", "6380", "--redis-password", "rp",
            "--redis-prefix", "pre", "--libpq-conninfo", "dbname=x", "--libpq-table", "q",
            "--idle-timeout", "30", "--max-connections=500",
        ]
    )  # fmt: skip
    cfg = parsed.config
    assert (cfg.port, cfg.listen, cfg.backlog, cfg.daemon, cfg.pid_file) == (
        4731, "127.0.0.1", 64, True, "/tmp/p.pid",
    )  # fmt: skip
    assert (cfg.log_file, cfg.queue_type, cfg.job_retries, cfg.worker_wakeup) == (
        "none", "libsqlite3", 3, 2,
    )  # fmt: skip
    assert cfg.queue_options["libsqlite3-db"] == "/tmp/q.db"
    assert cfg.queue_options["store-queue-on-shutdown"] == "true"
    assert cfg.queue_options["mysql-port"] == "3307"
    assert cfg.queue_options["redis-prefix"] == "pre"
    assert cfg.queue_options["libpq-conninfo"] == "dbname=x"
    assert len(cfg.queue_options) == 15
    assert (cfg.round_robin, cfg.handle_prefix, cfg.exceptions, cfg.keepalive) == (
        True, "X", True, True,
    )  # fmt: skip
    assert (cfg.keepalive_idle, cfg.keepalive_interval, cfg.keepalive_count) == (10, 5, 3)
    assert (cfg.verbose, cfg.threads, cfg.user, cfg.file_descriptors) == ("INFO", 0, "nobody", 1000)
    assert (cfg.hashtable_buckets, cfg.syslog, cfg.coredump, cfg.http_port) == (7, True, True, 8081)
    assert (cfg.ssl_ca_file, cfg.ssl_certificate, cfg.ssl_key) == ("ca", "c", "k")
    assert cfg.max_packet_size == 1024
    assert (cfg.idle_timeout, cfg.max_connections) == (30.0, 500)
    assert parse_args(["--queue", "sqlite:///x.db"]).config.queue_type == "sqlite:///x.db"
    assert parse_args(["-j", "-1"]).config.job_retries == -1


def test_checklist_27_config_file_and_overrides(tmp_path: Path) -> None:
    conf = tmp_path / "gearmand.conf"
    conf.write_text("# comment\n--port 4799\n-j 2 --verbose=DEBUG\n")
    cfg = parse_args(["--config-file", str(conf), "-j", "5"]).config
    assert (cfg.port, cfg.job_retries, cfg.verbose) == (4799, 5, "DEBUG")
    with pytest.raises(ConfigError):
        parse_args(["--config-file", str(tmp_path / "missing.conf")])


@pytest.mark.parametrize(
    "argv",
    [["--bogus"], ["-p"], ["-p", "notaport"], ["--verbose", "LOUD"], ["-v"], ["-j", "-5"],
     ["-q", "x", "--queue", "y"], ["--max-packet-size", "0"]],
)  # fmt: skip
def test_checklist_27_bad_flag_exit_2(argv: list[str]) -> None:
    res = run(*argv, "--check-args")
    assert res.returncode == 2, res
    assert "gearshift server:" in res.stderr


def test_checklist_27_check_args_version_help() -> None:
    assert run("-p", "1", "--job-retries=3", "--check-args").returncode == 0
    res = run("-V")
    assert res.returncode == 0 and __version__ in res.stdout
    res = run("--help")
    assert res.returncode == 0 and "--job-retries" in res.stdout


@pytest.mark.parametrize(
    "argv",
    [["--ssl", "--ssl-certificate", "/nonexistent.pem", "--ssl-key", "/nonexistent.key"],
     ["-r", "gopher"]],
)  # fmt: skip
def test_unusable_tls_or_protocol_is_a_command_line_error(argv: list[str]) -> None:
    # never silently serve plaintext (gearmand 1.1.20 does, 2.0 refuses)
    res = run(*argv, "-p", str(free_port()))
    assert res.returncode == 2
    assert "TLS" in res.stderr or "unknown protocol" in res.stderr


def test_checklist_27_unknown_queue_type_fails_to_start() -> None:
    res = run("-p", str(free_port()), "-L", "127.0.0.1", "-q", "nonsense", "-l", "stderr")
    assert res.returncode == 2  # a command-line error: refused before starting
    assert "nonsense" in res.stderr


def test_checklist_27_daemon_and_pid_file(tmp_path: Path) -> None:
    port = free_port()
    pidfile = tmp_path / "g.pid"
    log = tmp_path / "g.log"
    res = run(
        "-d", "-P", str(pidfile), "-p", str(port), "-L", "127.0.0.1", "-l", str(log), "-q",
        "builtin", "--verbose", "INFO",
    )  # fmt: skip
    assert res.returncode == 0  # the parent returns at once
    deadline = time.monotonic() + 20
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int(pidfile.read_text())
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        assert talk(port, b"\0REQ\x00\x00\x00\x10\x00\x00\x00\x01x", 13)[-1:] == b"x"
        assert os.getsid(pid) != os.getsid(0)  # detached into its own session
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pidfile.exists()  # removed on clean exit
    assert "listening on" in log.read_text()


def test_checklist_28_sigterm_stops_and_hup_reopens_log(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    proc = subprocess.Popen(
        [*SERVER, "-p", str(port), "-L", "127.0.0.1", "-l", str(log), "-q", "builtin",
         "--verbose", "INFO"],
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_listening(port, proc)
        rotated = tmp_path / "server.log.1"
        log.rename(rotated)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while not log.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert log.exists()
        assert "reopened log file" in log.read_text()
        assert "listening on" in rotated.read_text()
        proc.send_signal(signal.SIGTERM)
        assert wait_exit(proc) == 0
        assert "shut down" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_checklist_28_sigint_stops() -> None:
    srv = Gearshift([]).start()
    try:
        srv.signal(signal.SIGINT)
        assert srv.proc is not None and wait_exit(srv.proc) == 0
    finally:
        srv.close()


def test_checklist_28_sigusr1_graceful() -> None:
    srv = Gearshift([]).start()
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as c:
            # a foreground job keeps the server alive after SIGUSR1
            body = b"f\0\0x"
            c.sendall(b"\0REQ" + (7).to_bytes(4, "big") + len(body).to_bytes(4, "big") + body)
            created = c.recv(64)
            assert created[4:8] == (8).to_bytes(4, "big")
            handle = created[12:]
            srv.signal(signal.SIGUSR1)
            # Draining: still listening (workers may come back), but submits are refused.
            deadline = time.monotonic() + 20
            # A foreground probe on another function: if it is accepted (before the
            # signal arrived), its client leaves at once, so the drain does not wait for it.
            late_body = b"other\0\0late"
            late = b"\0REQ" + (7).to_bytes(4, "big") + len(late_body).to_bytes(4, "big")
            late += late_body
            while True:
                reply = talk(srv.port, late, 12)
                if reply[4:8] == (19).to_bytes(4, "big"):  # ERROR SHUTDOWN_GRACEFUL
                    break
                assert time.monotonic() < deadline, "submits still accepted after SIGUSR1"
                time.sleep(0.05)
            assert srv.proc is not None and srv.proc.poll() is None
            # the existing connection still works: it becomes the worker and finishes
            for ptype, payload in ((1, b"f"), (9, b""), (13, handle + b"\0done")):
                c.sendall(
                    b"\0REQ" + ptype.to_bytes(4, "big") + len(payload).to_bytes(4, "big") + payload
                )
            assert wait_exit(srv.proc) == 0
    finally:
        srv.close()


def test_checklist_27_syslog_and_coredump_flags_run() -> None:
    srv = Gearshift(["--syslog", "--coredump", "-t", "4", "--hashtable-buckets", "7"]).start()
    try:
        assert talk(srv.port, b"\0REQ\x00\x00\x00\x10\x00\x00\x00\x01x", 13)[-1:] == b"x"
        assert srv.proc is not None
        limits = Path(f"/proc/{srv.proc.pid}/limits").read_text()
        core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
        soft, hard = core.split()[4:6]
        assert soft == hard
    finally:
        srv.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_checklist_27_user_switch() -> None:
    import pwd

    nobody = pwd.getpwnam("nobody")
    srv = Gearshift(["-u", "nobody"]).start()
    try:
        assert srv.proc is not None
        status = Path(f"/proc/{srv.proc.pid}/status").read_text()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uid_line.split()[1:3] == [str(nobody.pw_uid)] * 2
        assert talk(srv.port, b"\0REQ\x00\x00\x00\x10\x00\x00\x00\x01x", 13)[-1:] == b"x"
    finally:
        srv.close()


def test_checklist_27_unknown_user_is_an_error() -> None:
    res = run("-p", str(free_port()), "-L", "127.0.0.1", "-u", "no-such-user-xyz", "-l", "stderr")
    assert res.returncode == 1
    assert "no-such-user-xyz" in res.stderr


def test_drain_and_wakeup_flags() -> None:
    cfg = parse_args(["--drain-timeout", "5", "--worker-wakeup-delay", "0.2"]).config
    assert (cfg.drain_timeout, cfg.worker_wakeup_delay) == (5.0, 0.2)
    defaults = parse_args([]).config
    assert (defaults.drain_timeout, defaults.worker_wakeup_delay) == (60.0, 0.05)
    for bad in (
        ["--drain-timeout", "-1"],
        ["--worker-wakeup-delay", "nan"],
        ["--drain-timeout", "x"],
    ):
        with pytest.raises(ConfigError):
            parse_args(bad)
