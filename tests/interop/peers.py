"""Running real Gearman peers (libgearman's CLI, gearadmin, PHP, Perl) against a server.

The peers come from Debian packages that ``make test`` installs
(scripts/install-system-deps.sh).  A missing peer fails the test with a clear message:
these tests must never be skipped silently.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from gearshift.protocol import Packet, PacketType
from tests.interop.harness import RawConnection, req
from tests.procs import ServerProcess

#: Generous: the machine is shared and libgearman peers are started per test.
PEER_TIMEOUT = 30.0


def require_program(name: str) -> str:
    """The absolute path of ``name``; fails (never skips) when it is not installed."""
    path = shutil.which(name)
    assert path, f"{name} is not installed: run `make system-deps` (scripts/install-system-deps.sh)"
    return path


def require_php_gearman() -> str:
    php = require_program("php")
    out = subprocess.run([php, "-m"], capture_output=True, text=True, timeout=PEER_TIMEOUT)
    assert "gearman" in out.stdout.split(), "php-gearman is not installed: run `make system-deps`"
    return php


def require_perl_gearman() -> str:
    perl = require_program("perl")
    probe = subprocess.run(
        [perl, "-MGearman::Client", "-MGearman::Worker", "-e1"],
        capture_output=True,
        text=True,
        timeout=PEER_TIMEOUT,
    )
    assert probe.returncode == 0, (
        "Perl Gearman::Client/Worker missing: run `make system-deps`: " + probe.stderr
    )
    return perl


def host_args(srv: ServerProcess) -> list[str]:
    return ["-h", "127.0.0.1", "-p", str(srv.port)]


def run(
    argv: Sequence[str], *, stdin: bytes = b"", timeout: float = PEER_TIMEOUT
) -> subprocess.CompletedProcess[bytes]:
    """Run a peer to completion and return its output (bytes, stdout and stderr apart)."""
    return subprocess.run(list(argv), input=stdin, capture_output=True, timeout=timeout)


def gearman(
    srv: ServerProcess, *args: str, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    """libgearman's ``gearman`` client (or one-shot worker) against ``srv``."""
    return run([require_program("gearman"), *host_args(srv), *args], stdin=stdin)


def gearadmin(srv: ServerProcess, *args: str) -> subprocess.CompletedProcess[bytes]:
    return run([require_program("gearadmin"), *host_args(srv), *args])


def admin_command(srv: ServerProcess, line: str) -> list[bytes]:
    """One admin command over a raw socket; the reply's lines (list replies end with '.')."""
    conn = RawConnection(srv.port)
    try:
        conn.send(line.encode() + b"\r\n")
        deadline = time.monotonic() + PEER_TIMEOUT
        lines = [conn.read_line(deadline)]
        if not lines[0].startswith((b"OK", b"ERR")) and lines[0] != b".\n":
            while lines[-1] != b".\n":
                lines.append(conn.read_line(deadline))
        return lines
    finally:
        conn.close()


def unique_status(srv: ServerProcess, unique: bytes) -> tuple[bytes, ...]:
    """GET_STATUS_UNIQUE over a raw socket: (unique, known, running, num, den, waiting clients)."""
    conn = RawConnection(srv.port)
    try:
        conn.send(req(PacketType.GET_STATUS_UNIQUE, unique))
        kind, packet = conn.read_packet_or_line(time.monotonic() + PEER_TIMEOUT)
        assert kind == "packet" and isinstance(packet, Packet), packet
        assert packet.type == PacketType.STATUS_RES_UNIQUE, packet
        return packet.args
    finally:
        conn.close()


def status(srv: ServerProcess) -> dict[str, tuple[int, int, int]]:
    """``status`` as {function: (total, running, workers)}."""
    rows: dict[str, tuple[int, int, int]] = {}
    for line in admin_command(srv, "status")[:-1]:
        name, total, running, workers = line.decode().rstrip("\n").split("\t")
        rows[name] = (int(total), int(running), int(workers))
    return rows


def wait_for(cond: Callable[[], bool], what: str, timeout: float = PEER_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def wait_status(srv: ServerProcess, function: str, expected: tuple[int, int, int]) -> None:
    """Wait until ``status`` shows ``expected`` for ``function`` (a peer that just exited
    is unregistered when the server notices the closed socket, a moment later)."""
    wait_for(
        lambda: status(srv).get(function) == expected,
        f"status {function} == {expected} (now {status(srv).get(function)})",
    )


def wait_workers(srv: ServerProcess, function: str, count: int = 1) -> None:
    """Wait until ``function`` has at least ``count`` registered workers."""
    wait_for(
        lambda: status(srv).get(function, (0, 0, 0))[2] >= count,
        f"{count} worker(s) for {function}",
    )


@contextmanager
def background(
    argv: Sequence[str], *, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A peer process (a worker) that the block may wait for; killed if still running."""
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            # Only this process group: the peer and whatever command it spawned.
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=PEER_TIMEOUT)


def finish(proc: subprocess.Popen[bytes]) -> tuple[int, bytes, bytes]:
    """Wait for a background peer to exit on its own; its status and output."""
    out, err = proc.communicate(timeout=PEER_TIMEOUT)
    return proc.returncode, out, err
