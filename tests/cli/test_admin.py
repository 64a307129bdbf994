"""``gearshift admin`` against real servers, compared byte for byte with gearadmin."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import time
from collections.abc import Callable

import pytest
from tests.cli.conftest import (
    Procs,
    admin_lines,
    call,
    gearadmin,
    gearman,
    gearshift_argv,
    gs,
    needs_gearadmin,
    needs_gearman,
    status_of,
    wait_queued,
    wait_workers,
)
from tests.procs import ServerProcess, free_port, wait_listening

from gearshift.cli._common import resolve_servers

pytestmark = [pytest.mark.interop, needs_gearadmin, needs_gearman]

READ_ONLY_FLAGS = [
    "--status",
    "--priority-status",
    "--workers",
    "--show-jobs",
    "--show-unique-jobs",
    "--getpid",
    "--server-version",
    "--server-verbose",
]


def populate(srv: ServerProcess, procs: Procs) -> None:
    """A worker for ``rev``, three queued background jobs (one with a unique id)."""
    port = str(srv.port)
    procs.gearman("-w", "-p", port, "-f", "rev", "--", "rev")
    wait_workers(srv.port, "rev")
    for args in (["a"], ["b"], ["-u", "myuniq", "c"]):
        r = gearman("-p", port, "-b", "-f", "queued", *args)
        assert r.returncode == 0, r.stderr
    gearman("-p", port, "-b", "-I", "-f", "queued", "high")
    wait_queued(srv.port, "queued", 4)


def same(srv: ServerProcess, *args: str) -> subprocess.CompletedProcess[bytes]:
    """gearadmin and gearshift admin (in-process) print the same bytes; returns ours."""
    ref = gearadmin("-p", str(srv.port), *args)
    ours = call("admin", "-p", str(srv.port), *args)
    assert ours.stdout == ref.stdout, (args, ref.stdout, ours.stdout, ours.stderr)
    assert ours.stderr == ref.stderr, (args, ref.stderr, ours.stderr)
    return ours


def test_read_only_flags_match_gearadmin(server: ServerProcess, procs: Procs) -> None:
    populate(server, procs)
    for flag in READ_ONLY_FLAGS:
        ours = same(server, flag)
        assert ours.returncode == 0 and ours.stdout, flag
    # All at once, typed in reverse of gearadmin's execution order: the output order
    # must still be gearadmin's (getpid first, status last).
    ours = same(server, *reversed(READ_ONLY_FLAGS))
    lines = ours.stdout.decode().splitlines()
    assert lines[0] == str(int(lines[0]))
    assert lines[-1] == "."
    # The real command line, through `python -m gearshift`, once.
    sub = gs("admin", "-p", str(server.port), "--status", "--server-version")
    assert sub.returncode == 0
    assert sub.stdout == gearadmin("-p", str(server.port), "--status", "--server-version").stdout


def test_mutating_flags_match_gearadmin(server: ServerProcess, procs: Procs) -> None:
    populate(server, procs)
    port = str(server.port)
    # create / drop
    ref = gearadmin("-p", port, "--create-function=made_by_gearadmin")
    ours = call("admin", "-p", port, "--create-function", "made_by_gearshift")
    assert ref.stdout == ours.stdout == b"OK\n"
    assert ref.returncode == ours.returncode == 0
    assert {"made_by_gearadmin", "made_by_gearshift"} <= set(status_of(server.port))
    ref = gearadmin("-p", port, "--drop-function=made_by_gearadmin")
    ours = call("admin", "-p", port, "--drop-function=made_by_gearshift")
    assert ref.stdout == ours.stdout == b"OK\n"
    assert not {"made_by_gearadmin", "made_by_gearshift"} & set(status_of(server.port))
    # Refusals print like gearadmin; a function with workers cannot be dropped.
    for flag in (
        "--drop-function=no_such_function",
        "--cancel-job=H:nohost:424242",
        "--drop-function=rev",
    ):
        ours = same(server, flag)
        assert ours.stderr.startswith(b"Error: ") and ours.stderr.endswith(b"\r\n")
        # Deliberate difference: a refused command is a failure (gearadmin 1.1.20 exits 0).
        assert ours.returncode == 1
    # cancel a real job
    handles = [line.split("\t")[0] for line in admin_lines(server.port, "show jobs")[:-1]]
    assert len(handles) >= 2
    ref = gearadmin("-p", port, f"--cancel-job={handles[0]}")
    ours = call("admin", "-p", port, "--cancel-job", handles[1])
    assert ref.stdout == ours.stdout == b"OK\n"
    assert ours.returncode == 0
    # An error in the middle does not stop the other commands.
    r = call("admin", "-p", port, "--drop-function=nope", "--getpid", "--status")
    assert r.returncode == 1
    assert r.stderr.startswith(b"Error: ")
    out = r.stdout.decode().splitlines()
    assert out[0].isdigit() and out[-1] == "."


def test_connection_refused() -> None:
    port = str(free_port())
    ref = gearadmin("-p", port, "--status")
    ours = call("admin", "-p", port, "--status")
    assert ref.returncode == ours.returncode == 1
    assert ref.stdout == ours.stdout == b""
    assert ours.stderr.startswith(b"Error: Error connecting to localhost.")


def test_unresolvable_host() -> None:
    ref = gearadmin("-h", "no-such-host.invalid", "--status")
    ours = call("admin", "-h", "no-such-host.invalid", "--status")
    assert ref.returncode == ours.returncode == 1
    assert ours.stderr.startswith(b"Error: Failed to connect on no-such-host.invalid:4730 with ")


def test_usage_errors_exit_1() -> None:
    for args in (
        [],
        ["--bogus"],
        ["--create-function"],
        ["--maxqueue", "f", "1", "2"],
        ["--watch", "0", "--status"],
        ["--graceful"],
    ):
        r = call("admin", *args)
        assert r.returncode == 1, args
        assert b"usage: gearshift admin" in r.stderr
    assert gearadmin().returncode == 1
    assert gs("admin").returncode == 1
    bad_ca = {"GEARMAND_CA_CERTIFICATE": "/no/such/ca.pem"}
    r = call("admin", "-S", "--status", env=bad_ca)
    assert r.returncode == 1 and b"TLS" in r.stderr


def test_help() -> None:
    r = call("admin", "--help")
    assert r.returncode == 0
    for flag in READ_ONLY_FLAGS + ["--create-function", "--drop-function", "--cancel-job"]:
        assert flag.encode() in r.stdout
    for flag in ("--json", "--watch", "--shutdown", "--maxqueue"):
        assert flag.encode() in r.stdout


def test_json_rows(server: ServerProcess, procs: Procs) -> None:
    populate(server, procs)
    r = call(
        "admin",
        "-p",
        str(server.port),
        "--json",
        "--status",
        "--priority-status",
        "--workers",
        "--show-jobs",
        "--show-unique-jobs",
        "--getpid",
        "--server-version",
        "--server-verbose",
        "--drop-function=not_there",
    )
    assert r.returncode == 1  # the refused drop
    doc = json.loads(r.stdout)
    status = {row["name"]: row for row in doc["status"]}
    assert status["queued"]["total"] == 4 and status["queued"]["queued"] == 4
    assert status["rev"]["workers"] == 1
    prio = {row["name"]: row for row in doc["priority_status"]}
    assert (prio["queued"]["high"], prio["queued"]["normal"], prio["queued"]["low"]) == (1, 3, 0)
    assert any("rev" in w["functions"] for w in doc["workers"])
    assert len(doc["show_jobs"]) == 4 and all(j["background"] for j in doc["show_jobs"])
    assert "myuniq" in doc["show_unique_jobs"]
    assert doc["getpid"] == int(admin_lines(server.port, "getpid")[0].split()[1])
    assert isinstance(doc["server_version"], str) and doc["server_version"]
    assert isinstance(doc["server_verbose"], str) and doc["server_verbose"]
    assert doc["drop_function"]["error"]["code"]
    assert list(doc) == [
        "getpid",
        "drop_function",
        "show_jobs",
        "show_unique_jobs",
        "server_verbose",
        "server_version",
        "workers",
        "priority_status",
        "status",
    ]


def test_maxqueue_limits_the_queue(server: ServerProcess) -> None:
    port = str(server.port)
    r = call("admin", "-p", port, "--create-function=mq", "--maxqueue", "mq", "1")
    assert r.returncode == 0 and r.stdout == b"OK\nOK\n", r.stderr
    assert gearman("-p", port, "-b", "-f", "mq", "one").returncode == 0
    second = gearman("-p", port, "-b", "-f", "mq", "two")
    assert b"QUEUE_ERROR" in second.stderr
    ours = call("submit", "-p", port, "-b", "-f", "mq", "three")
    assert ours.returncode == 1 and b"queue" in ours.stderr.lower()
    wait_queued(server.port, "mq", 1)
    # High/normal/low form, then reset.
    assert call("admin", "-p", port, "--maxqueue", "mq", "5", "5", "5").stdout == b"OK\n"
    assert call("admin", "-p", port, "--maxqueue", "mq").stdout == b"OK\n"
    assert gearman("-p", port, "-b", "-f", "mq", "three").stderr == b""
    wait_queued(server.port, "mq", 2)


def test_shutdown(server: ServerProcess) -> None:
    r = gs("admin", "-p", str(server.port), "--shutdown", "--graceful")
    if server.kind_name == "gearmand":  # type: ignore[attr-defined]
        # gearmand removed the command in 1.1.15.
        assert r.returncode == 1
        assert r.stderr == b"Error: UNKNOWN_COMMAND Unknown+server+commandshutdown\r\n"
    else:
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"OK\n"
        assert server.proc is not None
        server.proc.wait(30)


def _read_until(proc: subprocess.Popen[bytes], needle: bytes, count: int, timeout: float) -> bytes:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while buf.count(needle) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"only {buf.count(needle)} refreshes: {buf!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            assert chunk, f"watch exited early: {buf!r}"
            buf += chunk
    return buf


def test_watch_plain_output_until_sigint(server: ServerProcess, procs: Procs) -> None:
    populate(server, procs)
    proc = procs.gearshift("admin", "-p", str(server.port), "--watch", "0.2")
    out = _read_until(proc, b"gearshift admin --watch", 2, 30)
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    text = (out + rest).decode()
    assert "\x1b[" not in text  # not a terminal: no cursor movement
    table = text.split("\n\n")[1]
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines()[2:-2]}
    assert rows["queued"] == ["4", "0", "0"]
    assert rows["rev"] == ["0", "0", "1"]


def test_watch_redraws_in_place_on_a_tty(server: ServerProcess, procs: Procs) -> None:
    master, slave = pty.openpty()
    try:
        proc = procs.start(
            gearshift_argv("admin", "-p", str(server.port), "--watch", "0.2"),
            stdout=slave,
            stderr=slave,
        )
        os.close(slave)
        slave = -1
        buf = b""
        deadline = time.monotonic() + 30
        while buf.count(b"\x1b[H") < 2:
            assert time.monotonic() < deadline, buf
            ready, _, _ = select.select([master], [], [], 1)
            if ready:
                buf += os.read(master, 65536)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        while True:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
        assert buf.startswith(b"\x1b[?25l\x1b[2J\x1b[H")  # hide cursor, clear, home
        assert b"FUNCTION" in buf and b"\x1b[K" in buf
        assert buf.endswith(b"\x1b[?25h")  # the cursor is given back on Ctrl-C
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)


def test_watch_json_lines_in_process(server: ServerProcess, procs: Procs) -> None:
    # Driven in-process: SIGINT lands while the refresh loop waits.
    import threading

    populate(server, procs)

    def interrupt() -> None:
        # Only once --watch has taken over SIGINT, or pytest itself would be interrupted.
        deadline = time.monotonic() + 30
        while signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        time.sleep(0.6)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=interrupt, daemon=True)
    thread.start()
    r = call("admin", "-p", str(server.port), "--watch=0.1", "--json")
    thread.join(30)
    assert r.returncode == 0
    docs = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert len(docs) >= 2
    assert {row["name"]: row["queued"] for row in docs[0]["status"]}["queued"] == 4


def test_server_lists_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEARMAN_SERVERS", raising=False)
    assert [str(s) for s in resolve_servers(None, None)] == ["localhost:4730"]
    assert [str(s) for s in resolve_servers("h1,h2:5", "7")] == ["h1:7", "h2:5"]
    monkeypatch.setenv("GEARMAN_SERVERS", "e1:1,e2")
    assert [str(s) for s in resolve_servers(None, None)] == ["e1:1", "e2:4730"]
    # -p alone means localhost on that port, as gearadmin reads it.
    assert [str(s) for s in resolve_servers(None, "9")] == ["localhost:9"]


def test_gearman_servers_env_is_used(gearmand: ServerProcess) -> None:
    r = gs("admin", "--getpid", env={"GEARMAN_SERVERS": gearmand.address})
    assert r.returncode == 0
    assert r.stdout.strip().isdigit()


PERL_GEARMAND = "/usr/bin/gearmand"


@pytest.mark.skipif(not os.access(PERL_GEARMAND, os.X_OK), reason="Perl Gearman::Server absent")
def test_perl_server_replies_match_gearadmin(procs: Procs) -> None:
    # Perl's Gearman::Server answers `version` without OK and list commands it lacks with
    # a single ERR line (which must not leave the reader waiting for a ".").
    port = free_port()
    proc = procs.start(
        [PERL_GEARMAND, "-p", str(port), "-L", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_listening(port, proc)
    for flags in (
        ["--status"],
        ["--workers"],
        ["--server-version"],
        ["--priority-status"],
        ["--priority-status", "--server-version", "--getpid"],
    ):
        ref = gearadmin("-p", str(port), *flags)
        ours = call("admin", "-p", str(port), *flags)
        assert (ours.stdout, ours.stderr) == (ref.stdout, ref.stderr), flags
    assert ours.stderr.startswith(b"Error: ")


def test_several_servers_text_json_and_a_dead_one(
    make_gearshift: Callable[..., ServerProcess],
    make_gearmand: Callable[..., ServerProcess],
    procs: Procs,
) -> None:
    gs_srv, gm_srv = make_gearshift(), make_gearmand()
    for srv in (gs_srv, gm_srv):
        populate(srv, procs)
    dead = f"127.0.0.1:{free_port()}"
    hosts = f"{gs_srv.address},{gm_srv.address}"
    # Text: each server's replies exactly as for that server alone, under [host:port].
    r = call("admin", "-h", hosts, "--status", "--getpid")
    assert r.returncode == 0, r.stderr
    expected = b""
    for srv in (gs_srv, gm_srv):
        alone = call("admin", "-p", str(srv.port), "--status", "--getpid")
        expected += f"[{srv.address}]\n".encode() + alone.stdout
    assert r.stdout == expected
    # A dead server is reported under its own header and makes the exit status 1.
    r = call("admin", "-h", f"{hosts},{dead}", "--server-version")
    assert r.returncode == 1
    assert r.stdout.endswith(f"[{dead}]\n".encode())
    assert r.stdout.count(b"[") == 3 and b"Error" in r.stderr
    # --json: one object keyed by server.
    r = call("admin", "-h", f"{hosts},{dead}", "--status", "--json")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert list(doc) == [gs_srv.address, gm_srv.address, dead]
    for srv in (gs_srv, gm_srv):
        assert {row["name"]: row["queued"] for row in doc[srv.address]["status"]}["queued"] == 4
    assert "error" in doc[dead]
