"""``gearshift worker`` serving libgearman's ``gearman`` client and raw clients."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.cli.conftest import (
    Procs,
    call,
    gearman,
    gs,
    needs_gearman,
    raw_submit,
    status_of,
    wait_for,
    wait_workers,
)
from tests.procs import ServerProcess

from gearshift.cli.worker import parse_args
from gearshift.protocol.packets import PacketType as T

pytestmark = [pytest.mark.interop, needs_gearman]


def start_worker(
    srv: ServerProcess, procs: Procs, *args: str, function: str
) -> subprocess.Popen[bytes]:
    proc = procs.gearshift("worker", "-p", str(srv.port), *args)
    wait_workers(srv.port, function)
    return proc


def test_command_worker_serves_gearman_client(server: ServerProcess, procs: Procs) -> None:
    start_worker(server, procs, "-f", "rev", "--", "rev", function="rev")
    r = gearman("-p", str(server.port), "-f", "rev", "hello")
    assert (r.stdout, r.stderr, r.returncode) == (b"olleh", b"", 0)
    # A multi-line workload goes through the command's stdin whole.
    r = gearman("-p", str(server.port), "-f", "rev", input=b"abc\ndef\n")
    assert r.stdout == b"cba\nfed\n"


def test_same_answers_as_gearman_worker(server: ServerProcess, procs: Procs) -> None:
    start_worker(server, procs, "-f", "ours", "--", "tr", "a-z", "A-Z", function="ours")
    procs.gearman("-w", "-p", str(server.port), "-f", "theirs", "--", "tr", "a-z", "A-Z")
    wait_workers(server.port, "theirs")
    for payload in (b"hello", b"", b"two\nlines\n", bytes(range(1, 256)) * 40):
        assert raw_submit(server.port, "ours", payload) == raw_submit(
            server.port, "theirs", payload
        )


@pytest.mark.parametrize(
    ("flag", "expected"),
    [("-n", [b"a\n", b"b\n", b"c"]), ("-N", [b"a", b"b", b"c"])],
)
def test_line_mode_sends_work_data_per_line(
    server: ServerProcess, procs: Procs, flag: str, expected: list[bytes]
) -> None:
    start_worker(server, procs, flag, "-f", "lines", "--", "cat", function="lines")
    packets = raw_submit(server.port, "lines", b"a\nb\nc")
    assert packets == [(T.WORK_DATA, (line,)) for line in expected] + [(T.WORK_COMPLETE, (b"",))]
    r = gearman("-p", str(server.port), "-f", "lines", "x\ny\n")
    assert r.returncode == 0
    assert r.stdout == (b"x\ny\n" if flag == "-n" else b"xy")


def test_failing_command_fails_the_job(server: ServerProcess, procs: Procs) -> None:
    start_worker(server, procs, "-f", "fail", "--", "false", function="fail")
    r = gearman("-p", str(server.port), "-f", "fail", "x")
    assert (r.stderr, r.returncode) == (b"Job failed\n", 1)
    r = gs("submit", "-p", str(server.port), "-f", "fail", "x")
    assert (r.stderr, r.returncode) == (b"Job failed\n", 1)


def test_failing_command_output_is_sent_first(server: ServerProcess, procs: Procs) -> None:
    start_worker(server, procs, "-f", "half", "--", "sh", "-c", "cat; exit 3", function="half")
    packets = raw_submit(server.port, "half", b"partial")
    assert packets[0] == (T.WORK_DATA, (b"partial",))
    assert packets[-1][0] == T.WORK_FAIL


def test_echo_without_command(server: ServerProcess, procs: Procs) -> None:
    proc = start_worker(server, procs, "-c", "1", "-f", "echo", function="echo")
    r = gearman("-p", str(server.port), "-f", "echo", "ping")
    assert (r.stdout, r.returncode) == (b"ping", 0)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert out == b"ping"


def test_count_exits_after_n_jobs(server: ServerProcess, procs: Procs, tmp_path: Path) -> None:
    pidfile = tmp_path / "worker.pid"
    proc = start_worker(
        server, procs, "-c", "2", "-i", str(pidfile), "-f", "cnt", "--", "cat", function="cnt"
    )
    assert pidfile.read_text().strip() == str(proc.pid)
    for word in (b"one", b"two"):
        assert gearman("-p", str(server.port), "-f", "cnt", word.decode()).stdout == word
    assert proc.wait(30) == 0
    assert not pidfile.exists()
    wait_for(lambda: status_of(server.port)["cnt"][2] == 0, 30, "worker gone")


def test_several_functions(server: ServerProcess, procs: Procs) -> None:
    start_worker(server, procs, "-f", "f1", "-f", "f2", "--", "rev", function="f1")
    wait_workers(server.port, "f2")
    assert gearman("-p", str(server.port), "-f", "f1", "-f", "f2", "ab").stdout == b"baba"


def test_concurrency_runs_jobs_at_once(server: ServerProcess, procs: Procs) -> None:
    proc = start_worker(
        server,
        procs,
        "--concurrency",
        "3",
        "-f",
        "slow",
        "--",
        "sh",
        "-c",
        "sleep 3; cat",
        function="slow",
    )
    for i in range(3):
        assert gearman("-p", str(server.port), "-b", "-f", "slow", str(i)).returncode == 0
    wait_for(lambda: status_of(server.port)["slow"][1] == 3, 20, "3 jobs running at once")
    proc.kill()  # no need to wait for the sleeps: the server requeues the jobs


def test_sigterm_finishes_the_running_job(server: ServerProcess, procs: Procs) -> None:
    proc = start_worker(
        server, procs, "-f", "grace", "--", "sh", "-c", "sleep 1; cat", function="grace"
    )
    client = procs.gearman("-p", str(server.port), "-f", "grace", "bye")
    wait_for(lambda: status_of(server.port)["grace"][1] == 1, 20, "job running")
    proc.send_signal(signal.SIGTERM)
    out, _ = client.communicate(timeout=30)
    assert out == b"bye"
    assert proc.wait(30) == 0


def test_gearshift_submit_to_gearshift_worker(server: ServerProcess, procs: Procs) -> None:
    start_worker(server, procs, "-N", "-f", "up", "--", "tr", "a-z", "A-Z", function="up")
    r = gs("submit", "-p", str(server.port), "-P", "-f", "up", "one", "two")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"up: ONEup: up: TWOup: "


def test_gearshift_submit_to_gearman_worker(server: ServerProcess, procs: Procs) -> None:
    procs.gearman("-w", "-p", str(server.port), "-f", "grev", "--", "rev")
    wait_workers(server.port, "grev")
    r = gs("submit", "-p", str(server.port), "-n", "-f", "grev", input=b"abc\nxyz\n")
    assert (r.stdout, r.returncode) == (b"cba\nzyx\n", 0)


def test_server_list(
    server: ServerProcess, make_any_server: Callable[..., ServerProcess], procs: Procs
) -> None:
    other = make_any_server()
    hosts = f"127.0.0.1:{server.port},127.0.0.1:{other.port}"
    procs.gearshift("worker", "-h", hosts, "-f", "multi", "--", "rev")
    wait_workers(server.port, "multi")
    wait_workers(other.port, "multi")
    assert gearman("-p", str(other.port), "-f", "multi", "ab").stdout == b"ba"
    assert gearman("-p", str(server.port), "-f", "multi", "cd").stdout == b"dc"
    # The client side takes the same list (jobs are spread by unique id over both).
    uniques = [f"u{i}" for i in range(8)]
    for unique in uniques:
        r = call("submit", "-h", hosts, "-u", unique, "-f", "multi", "xy")
        assert (r.stdout, r.returncode) == (b"yx", 0), r.stderr
    # And so does GEARMAN_SERVERS.
    r = call("submit", "-f", "multi", "env", env={"GEARMAN_SERVERS": hosts})
    assert (r.stdout, r.returncode) == (b"vne", 0), r.stderr


def test_job_time_limit(server: ServerProcess, procs: Procs) -> None:
    start_worker(server, procs, "-t", "500", "-f", "stuck", "--", "sleep", "30", function="stuck")
    # Line mode, with a workload larger than a pipe buffer that the command never reads.
    start_worker(
        server, procs, "-n", "-t", "500", "-f", "stuckn", "--", "sleep", "30", function="stuckn"
    )
    for function, payload in (("stuck", b"x"), ("stuckn", b"y" * (1 << 20))):
        started = time.monotonic()
        r = call("submit", "-p", str(server.port), "-t", "20000", "-f", function, input=payload)
        assert r.returncode == 1, function
        assert r.stderr == b"Job failed\n"
        assert time.monotonic() - started < 20


def test_usage_errors() -> None:
    assert gs("worker", "--", "rev").returncode == 1
    r = call("worker", "-f", "x", "--", "no-such-command-anywhere")
    assert r.returncode == 1 and b"command not found" in r.stderr
    assert call("worker", "--concurrency", "0", "-f", "x").returncode == 1
    assert call("worker", "-c", "many", "-f", "x").returncode == 1
    r = call("worker", "-S", "-f", "x", env={"GEARMAND_CA_CERTIFICATE": "/no/such/ca.pem"})
    assert r.returncode == 1 and b"TLS" in r.stderr
    r = call("worker", "--help")
    assert r.returncode == 0 and b"--concurrency" in r.stdout


def test_parse_args_stops_at_the_command() -> None:
    o = parse_args(["-w", "-f", "a", "-c", "3", "-N", "grep", "-v", "x"])
    assert o.functions == ["a"] and o.count == 3 and o.per_line and o.strip_newline
    assert o.command == ["grep", "-v", "x"]
    assert parse_args(["-f", "a", "--", "-weird"]).command == ["-weird"]


def test_count_mode_signals(server: ServerProcess, procs: Procs) -> None:
    busy = start_worker(
        server, procs, "-c", "5", "-f", "cbusy", "--", "sh", "-c", "sleep 1; cat", function="cbusy"
    )
    client = procs.gearman("-p", str(server.port), "-f", "cbusy", "kept")
    wait_for(lambda: status_of(server.port)["cbusy"][1] == 1, 20, "job running")
    busy.send_signal(signal.SIGTERM)
    out, _ = client.communicate(timeout=30)
    assert out == b"kept"  # the job in hand was finished
    assert busy.wait(30) == 0
    idle = start_worker(server, procs, "-c", "5", "-f", "cidle", function="cidle")
    idle.send_signal(signal.SIGINT)
    assert idle.wait(30) == 0
