"""gearshift.testing: the helpers other test suites use to run a server."""

from __future__ import annotations

import socket
import struct

import pytest

from gearshift.testing import ServerThread, serve
from tests.server.helpers import Raw, T


def echo(address: str, payload: bytes) -> bytes:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"\0REQ" + struct.pack(">II", T.ECHO_REQ, len(payload)) + payload)
        got = b""
        while len(got) < 12 + len(payload):
            chunk = s.recv(65536)
            assert chunk
            got += chunk
        return got[12:]


def test_server_thread_serves_and_stops() -> None:
    with ServerThread(job_retries=3, handle_prefix="T") as srv:
        assert srv.address.startswith("127.0.0.1:") and srv.port > 0
        assert echo(srv.address, b"ping") == b"ping"
        assert srv.server is not None and srv.server.config.job_retries == 3
        port = srv.port
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_server_thread_reports_start_errors() -> None:
    with ServerThread() as first:
        clash = ServerThread(port=first.port)
        with pytest.raises(OSError):
            clash.start()


async def test_serve_context_manager() -> None:
    async with serve(exceptions=True) as srv:
        c = await Raw.connect(srv.address)
        assert await c.call(T.ECHO_REQ, b"x") == (T.ECHO_RES, (b"x",))
        assert srv.scheduler.exceptions
        await c.close()


async def test_keepalive_options_apply_to_accepted_sockets() -> None:
    async with serve(
        keepalive=True, keepalive_idle=11, keepalive_interval=7, keepalive_count=3
    ) as srv:
        c = await Raw.connect(srv.address)
        assert await c.call(T.ECHO_REQ, b"x") == (T.ECHO_RES, (b"x",))
        conn = next(iter(srv.server.connections))
        assert conn.transport is not None
        sock = conn.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 11
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 7
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
        await c.close()
