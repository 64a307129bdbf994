"""Every ``gearadmin`` flag against both servers, with identical expectations.

The server is populated over raw sockets (a named worker holding one job, queued jobs
of each priority), then each flag's exact output is checked.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator

import pytest

import gearshift
from gearshift.protocol import PacketType as P
from tests.conftest import ServerFactory
from tests.interop.harness import RawConnection, req
from tests.interop.peers import admin_command, gearadmin, status
from tests.procs import ServerProcess

pytestmark = pytest.mark.interop

HOST = socket.gethostname()


class Populated:
    """A server with jobs in every state; keeps its peer connections open."""

    def __init__(self, srv: ServerProcess) -> None:
        self.srv = srv
        self.worker = RawConnection(srv.port)
        self.client = RawConnection(srv.port)
        w = self.worker
        w.send(req(P.SET_CLIENT_ID, b"worker-1") + req(P.CAN_DO, b"alpha") + req(P.CAN_DO, b"beta"))
        self.handles = [
            self._submit(P.SUBMIT_JOB_BG, b"alpha", b"ua", b"1"),
            self._submit(P.SUBMIT_JOB_HIGH, b"beta", b"ub", b"2"),
            self._submit(P.SUBMIT_JOB_LOW_BG, b"beta", b"uc", b"3"),
            self._submit(P.SUBMIT_JOB_HIGH_BG, b"gamma", b"ug", b"4"),
        ]
        w.send(req(P.GRAB_JOB_UNIQ))
        kind, packet = w.read_packet_or_line(_deadline())
        assert kind == "packet"

    def _submit(self, ptype: int, *args: bytes) -> str:
        self.client.send(req(ptype, *args))
        kind, packet = self.client.read_packet_or_line(_deadline())
        assert kind == "packet"
        handle = packet.args[0]  # type: ignore[attr-defined]
        assert isinstance(handle, bytes)
        return handle.decode()

    def close(self) -> None:
        self.worker.close()
        self.client.close()


def _deadline() -> float:
    return time.monotonic() + 20.0


@pytest.fixture
def populated(make_any_server: ServerFactory) -> Iterator[Populated]:
    p = Populated(make_any_server())
    yield p
    p.close()


def _out(p: Populated, *args: str) -> tuple[int, str, str]:
    res = gearadmin(p.srv, *args)
    return res.returncode, res.stdout.decode(), res.stderr.decode()


def _sorted_list(text: str) -> list[str]:
    lines = text.split("\n")
    assert lines[-2:] == [".", ""], text
    return sorted(lines[:-2])


def test_status(populated: Populated) -> None:
    rc, out, err = _out(populated, "--status")
    assert (rc, err) == (0, "")
    assert _sorted_list(out) == ["alpha\t1\t0\t1", "beta\t2\t1\t1", "gamma\t1\t0\t0"]


def test_priority_status(populated: Populated) -> None:
    rc, out, err = _out(populated, "--priority-status")
    assert (rc, err) == (0, "")
    assert _sorted_list(out) == ["alpha\t0\t1\t0\t1", "beta\t0\t0\t1\t1", "gamma\t1\t0\t0\t0"]


def test_workers(populated: Populated) -> None:
    rc, out, err = _out(populated, "--workers")
    assert (rc, err) == (0, "")
    rows = sorted(re.sub(r"^\d+ ", "FD ", line) for line in _sorted_list(out))
    # every connection is listed: the worker, the client, gearadmin's own
    assert rows == ["FD 127.0.0.1 - :", "FD 127.0.0.1 - :", "FD 127.0.0.1 worker-1 : beta alpha"]


def test_show_jobs(populated: Populated) -> None:
    rc, out, err = _out(populated, "--show-jobs")
    assert (rc, err) == (0, "")
    h = populated.handles
    assert all(x.startswith(f"H:{HOST}:") for x in h)
    expected = [f"{h[0]}\t0\t0\t1", f"{h[1]}\t0\t0\t0", f"{h[2]}\t0\t0\t1", f"{h[3]}\t0\t0\t1"]
    assert _sorted_list(out) == sorted(expected)


def test_show_unique_jobs(populated: Populated) -> None:
    rc, out, err = _out(populated, "--show-unique-jobs")
    assert (rc, err) == (0, "")
    assert _sorted_list(out) == ["ua", "ub", "uc", "ug"]


def test_getpid(populated: Populated) -> None:
    assert populated.srv.proc is not None
    assert _out(populated, "--getpid") == (0, f"{populated.srv.proc.pid}\n", "")


def test_server_version(populated: Populated) -> None:
    rc, out, err = _out(populated, "--server-version")
    assert (rc, err) == (0, "")
    if populated.srv.kind == "gearmand":
        assert out == "1.1.20+ds\n"
    else:
        assert out == f"{gearshift.__version__}\n"


def test_server_verbose(populated: Populated) -> None:
    # Both servers run at their default level.
    assert _out(populated, "--server-verbose") == (0, "ERROR\n", "")


def test_create_function(populated: Populated) -> None:
    assert _out(populated, "--create-function=newf") == (0, "OK\n", "")
    assert status(populated.srv)["newf"] == (0, 0, 0)


def test_drop_function(populated: Populated) -> None:
    assert _out(populated, "--create-function=dropme") == (0, "OK\n", "")
    assert _out(populated, "--drop-function=dropme") == (0, "OK\n", "")
    assert "dropme" not in status(populated.srv)
    # gearadmin prints ERR replies on stderr as "Error: <rest of the line>" (keeping the
    # server's \r\n) and still exits 0
    assert _out(populated, "--drop-function=dropme") == (0, "", "Error: function not found\r\n")
    busy = _out(populated, "--drop-function=alpha")
    assert busy == (0, "", "Error: there are still connected workers or executing clients\r\n")


def test_cancel_job(populated: Populated) -> None:
    queued = populated.handles[3]
    assert _out(populated, f"--cancel-job={queued}") == (0, "OK\n", "")
    rows = admin_command(populated.srv, "show jobs")
    assert f"{queued}\t0\t1\t0\n".encode() in rows
    assert _out(populated, "--cancel-job=H:nosuch:1") == (0, "", "Error: UNKNOWN_JOB\r\n")
