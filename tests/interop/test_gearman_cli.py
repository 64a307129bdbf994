"""libgearman's ``gearman`` command (client and ``-w`` worker) against both servers.

Every test runs against gearshift and against gearmand 1.1.20 with the same
expectations, so the expectations themselves are checked against the reference.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ServerFactory
from tests.interop.peers import (
    admin_command,
    background,
    finish,
    gearman,
    host_args,
    require_program,
    status,
    unique_status,
    wait_for,
    wait_status,
    wait_workers,
)

pytestmark = pytest.mark.interop


def _worker(srv_args: list[str], *args: str) -> list[str]:
    return [require_program("gearman"), *srv_args, "-w", *args]


def test_foreground_round_trip(make_any_server: ServerFactory) -> None:
    srv = make_any_server()
    with background(_worker(host_args(srv), "-c", "1", "-f", "rev", "--", "rev")) as w:
        wait_workers(srv, "rev")
        res = gearman(srv, "-f", "rev", "hello")
        assert (res.returncode, res.stdout, res.stderr) == (0, b"olleh", b"")
        assert finish(w)[0] == 0
    wait_status(srv, "rev", (0, 0, 0))


def test_payload_from_stdin_and_prefix_flag(make_any_server: ServerFactory) -> None:
    srv = make_any_server()
    with background(_worker(host_args(srv), "-c", "2", "-f", "rev", "--", "rev")) as w:
        wait_workers(srv, "rev")
        assert gearman(srv, "-f", "rev", stdin=b"abc").stdout == b"cba"
        # -P prefixes output with the function name
        assert gearman(srv, "-P", "-f", "rev", "xyz").stdout == b"rev: zyx"
        assert finish(w)[0] == 0


def test_background_priorities_run_high_normal_low(
    make_any_server: ServerFactory, tmp_path: Path
) -> None:
    srv = make_any_server()
    for flags, payload in ((["-L"], "low"), ([], "normal"), (["-I"], "high")):
        res = gearman(srv, "-b", *flags, "-f", "pr", payload)
        assert (res.returncode, res.stdout) == (0, b"")
    assert status(srv)["pr"] == (3, 0, 0)
    assert admin_command(srv, "prioritystatus") == [b"pr\t1\t1\t1\t0\n", b".\n"]
    out = tmp_path / "order"
    cmd = ["sh", "-c", f"cat >> {out}; echo >> {out}"]
    with background(_worker(host_args(srv), "-c", "3", "-f", "pr", "--", *cmd)) as w:
        assert finish(w)[0] == 0
    assert out.read_text() == "high\nnormal\nlow\n"
    wait_status(srv, "pr", (0, 0, 0))


def test_unique_flag_coalesces_background_jobs(
    make_any_server: ServerFactory, tmp_path: Path
) -> None:
    srv = make_any_server()
    assert gearman(srv, "-b", "-u", "same", "-f", "uq", "first").returncode == 0
    assert gearman(srv, "-b", "-u", "same", "-f", "uq", "second").returncode == 0
    assert status(srv)["uq"] == (1, 0, 0)
    assert admin_command(srv, "show unique jobs") == [b"same\n", b".\n"]
    out = tmp_path / "got"
    with background(
        _worker(host_args(srv), "-c", "1", "-f", "uq", "--", "sh", "-c", f"cat > {out}")
    ) as w:
        assert finish(w)[0] == 0
    assert out.read_text() == "first"


def test_client_one_job_per_line(make_any_server: ServerFactory) -> None:
    srv = make_any_server()
    with background(_worker(host_args(srv), "-c", "4", "-f", "up", "--", "tr", "a-z", "A-Z")) as w:
        wait_workers(srv, "up")
        # -n keeps each line's newline, -N strips it
        assert gearman(srv, "-n", "-f", "up", stdin=b"ab\ncd\n").stdout == b"AB\nCD\n"
        assert gearman(srv, "-N", "-f", "up", stdin=b"ab\ncd\n").stdout == b"ABCD"
        assert finish(w)[0] == 0


def test_client_lines_as_background_jobs(make_any_server: ServerFactory) -> None:
    srv = make_any_server()
    assert gearman(srv, "-n", "-b", "-f", "lines", stdin=b"a\nb\nc\n").returncode == 0
    assert gearman(srv, "-N", "-b", "-I", "-f", "linesN", stdin=b"a\nb\n").returncode == 0
    assert status(srv)["lines"] == (3, 0, 0)
    assert admin_command(srv, "prioritystatus") == [
        b"lines\t0\t3\t0\t0\n",
        b"linesN\t2\t0\t0\t0\n",
        b".\n",
    ] or admin_command(srv, "prioritystatus") == [
        b"linesN\t2\t0\t0\t0\n",
        b"lines\t0\t3\t0\t0\n",
        b".\n",
    ]


def test_worker_sends_data_per_line(make_any_server: ServerFactory) -> None:
    srv = make_any_server()
    cmd = ["printf", "x\\ny\\n"]
    with background(_worker(host_args(srv), "-n", "-c", "1", "-f", "wn", "--", *cmd)) as w:
        wait_workers(srv, "wn")
        res = gearman(srv, "-f", "wn", "go")
        # libgearman's client prints each WORK_DATA chunk, then the (data-carrying) result
        assert (res.returncode, res.stdout) == (0, b"x\nx\ny\n")
        assert finish(w)[0] == 0


def test_worker_failure_reaches_client(make_any_server: ServerFactory) -> None:
    srv = make_any_server()
    cmd = ["sh", "-c", "echo oops; exit 3"]
    with background(_worker(host_args(srv), "-c", "1", "-f", "ex", "--", *cmd)) as w:
        wait_workers(srv, "ex")
        res = gearman(srv, "-f", "ex", "go")
        assert (res.returncode, res.stdout, res.stderr) == (1, b"oops\n", b"Job failed\n")
        assert finish(w)[0] == 0


def test_send_without_payload(make_any_server: ServerFactory) -> None:
    srv = make_any_server()
    with background(_worker(host_args(srv), "-c", "1", "-f", "s", "--", "cat")) as w:
        wait_workers(srv, "s")
        res = gearman(srv, "-s", "-f", "s")
        assert (res.returncode, res.stdout) == (0, b"")
        assert finish(w)[0] == 0


def test_client_timeout_without_worker(make_any_server: ServerFactory) -> None:
    srv = make_any_server()
    res = gearman(srv, "-t", "500", "-f", "nobody", "x")
    assert b"GEARMAN_TIMEOUT" in res.stderr
    # the abandoned foreground job is still counted until a worker reaches and drops it
    assert status(srv)["nobody"] == (1, 0, 0)
    assert admin_command(srv, "show jobs")[0].endswith(b"\t0\t1\t0\n")


def test_several_workers_share_jobs(make_any_server: ServerFactory) -> None:
    srv = make_any_server()
    argv = _worker(host_args(srv), "-c", "2", "-f", "sh", "--", "cat")
    with background(argv) as w1, background(argv) as w2:
        wait_workers(srv, "sh", 2)
        results = [gearman(srv, "-f", "sh", f"job{i}").stdout for i in range(4)]
        assert results == [b"job0", b"job1", b"job2", b"job3"]
        assert finish(w1)[0] == 0
        assert finish(w2)[0] == 0


def test_worker_with_several_functions(make_any_server: ServerFactory) -> None:
    srv = make_any_server()
    argv = _worker(host_args(srv), "-c", "2", "-f", "fa", "-f", "fb", "--", "rev")
    with background(argv) as w:
        wait_workers(srv, "fa")
        wait_workers(srv, "fb")
        assert gearman(srv, "-f", "fa", "abc").stdout == b"cba"
        assert gearman(srv, "-f", "fb", "xyz").stdout == b"zyx"
        assert finish(w)[0] == 0


def test_foreground_clients_with_same_unique_share_one_job(make_any_server: ServerFactory) -> None:
    srv = make_any_server()
    client = [require_program("gearman"), *host_args(srv), "-u", "shared", "-f", "co"]
    with background([*client, "first"]) as c1:
        # the second client must coalesce onto the queued job, not race it
        wait_for(lambda: status(srv).get("co", (0, 0, 0))[0] == 1, "first submit")
        with background([*client, "second"]) as c2:
            wait_for(lambda: unique_status(srv, b"shared")[5] == b"2", "second client attached")
            with background(_worker(host_args(srv), "-c", "1", "-f", "co", "--", "rev")) as w:
                assert finish(w)[0] == 0
            # one job ran, with the first submit's payload, and both clients got its result
            assert finish(c1) == (0, b"tsrif", b"")
            assert finish(c2) == (0, b"tsrif", b"")
    wait_status(srv, "co", (0, 0, 0))
