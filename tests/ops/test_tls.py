"""TLS on the job port and the HTTP port, with verified client certificates."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from gearshift.errors import ConfigError
from gearshift.protocol.codec import Decoder, Packet, encode_request
from gearshift.protocol.packets import PacketType as T
from gearshift.server.config import parse_args
from gearshift.testing import ServerThread
from gearshift.tls import TLSFiles, client_context, peer_identity
from tests.ops.conftest import Certs, RawWorker, http_raw, read_admin, reverse, wait_for


@pytest.fixture
def tls_server(certs: Certs) -> Iterator[ServerThread]:
    with ServerThread(
        **certs.server_options(),
        http=True,
        http_port=0,
    ) as srv:
        yield srv


def tls_connect(port: int, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    plain = socket.create_connection(("127.0.0.1", port), timeout=20)
    return ctx.wrap_socket(plain, server_hostname="localhost")


def request(sock: socket.socket, packet: bytes, until: set[int]) -> Packet:
    sock.sendall(packet)
    decoder = Decoder()
    while True:
        data = sock.recv(65536)
        assert data, "connection closed"
        for ev in decoder.feed(data):
            assert isinstance(ev, Packet)
            if ev.type in until:
                return ev


def refused(port: int, ctx: ssl.SSLContext) -> bool:
    """True if the server will not talk to us: handshake failure, alert or close."""
    try:
        with tls_connect(port, ctx) as s:
            s.sendall(encode_request(T.ECHO_REQ, b"ping"))
            s.settimeout(10)
            return s.recv(65536) == b""
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return True


def test_client_and_worker_over_tls(tls_server: ServerThread, certs: Certs) -> None:
    worker = RawWorker(
        tls_server.port, {"tls.rev": reverse}, context=certs.client_context("worker")
    )
    try:
        with tls_connect(tls_server.port, certs.client_context("app")) as s:
            assert s.version() in ("TLSv1.2", "TLSv1.3")
            s.sendall(encode_request(T.SUBMIT_JOB, b"tls.rev", b"", b"secret"))
            decoder = Decoder()
            seen: dict[int, Packet] = {}
            while T.WORK_COMPLETE not in seen:
                data = s.recv(65536)
                assert data
                for ev in decoder.feed(data):
                    assert isinstance(ev, Packet)
                    seen[ev.type] = ev
            handle = seen[T.JOB_CREATED].args[0]
            result = seen[T.WORK_COMPLETE]
            assert result.args == (handle, b"terces")
        # The worker's certificate name is its identity (shown by the JSON API).
        assert tls_server.server is not None
        http_port = tls_server.server.http_addresses[0][1]
        reply = http_raw(http_port, "GET", "/api/workers", context=certs.client_context("ops"))
        assert reply.status == 200
        rows = json.loads(reply.body)
        assert [r["identity"] for r in rows if "tls.rev" in r["functions"]] == ["worker"]
    finally:
        worker.close()


def test_client_without_certificate_refused(tls_server: ServerThread, certs: Certs) -> None:
    assert refused(tls_server.port, certs.client_context(None))


def test_wrong_certificate_refused(tls_server: ServerThread, certs: Certs) -> None:
    # Same common name as an authorised client, but signed by another CA.
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    cert, key = certs.client("intruder")
    ctx.load_cert_chain(str(cert), str(key))
    assert refused(tls_server.port, ctx)


def test_plaintext_to_tls_port_refused_cleanly(tls_server: ServerThread, certs: Certs) -> None:
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=20) as s:
        s.sendall(encode_request(T.ECHO_REQ, b"plain"))
        try:
            reply = s.recv(65536)
        except ConnectionResetError:
            reply = b""
        # No Gearman reply leaks out: the connection is closed (perhaps after a TLS alert).
        assert not reply.startswith(b"\0RES")
        s.settimeout(10)
        try:
            while s.recv(65536):
                pass
        except ConnectionResetError:
            pass
    # Plaintext admin text too.
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=20) as s:
        s.sendall(b"status\r\n")
        try:
            assert b"\t" not in s.recv(65536)
        except ConnectionResetError:
            pass
    # ...and the server keeps serving TLS peers.
    with tls_connect(tls_server.port, certs.client_context("app")) as s:
        echo = request(s, encode_request(T.ECHO_REQ, b"still here"), {T.ECHO_RES})
        assert echo.args[0] == b"still here"
        s.sendall(b"version\r\n")
        assert read_admin(s).startswith("OK ")


def test_http_port_is_tls_too(tls_server: ServerThread, certs: Certs) -> None:
    assert tls_server.server is not None
    http_port = tls_server.server.http_addresses[0][1]
    reply = http_raw(http_port, "GET", "/api/status", context=certs.client_context("app"))
    assert reply.status == 200 and json.loads(reply.body)["server"]["jobs"] == 0
    with pytest.raises((ssl.SSLError, ConnectionResetError, ValueError, IndexError)):
        http_raw(http_port, "GET", "/api/status", context=certs.client_context(None))
    with pytest.raises((ConnectionResetError, ValueError, IndexError)):
        http_raw(http_port, "GET", "/api/status")


def test_server_without_ca_accepts_any_tls_client(certs: Certs) -> None:
    with ServerThread(
        ssl=True, ssl_certificate=str(certs.server_cert), ssl_key=str(certs.server_key)
    ) as srv:
        ctx = client_context(TLSFiles(ca=str(certs.ca)))
        assert ctx is not None
        with tls_connect(srv.port, ctx) as s:
            assert request(s, encode_request(T.ECHO_REQ, b"x"), {T.ECHO_RES}).args == (b"x",)
            assert peer_identity(s.getpeercert()) == "localhost"


def test_gearmand_flags_and_environment(certs: Certs, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = parse_args(
        ["--ssl", "--ssl-certificate", "c.pem", "--ssl-key", "k.pem", "--ssl-ca-file", "ca.pem"]
    ).config
    assert (cfg.ssl, cfg.ssl_certificate, cfg.ssl_key, cfg.ssl_ca_file) == (
        True, "c.pem", "k.pem", "ca.pem",
    )  # fmt: skip
    monkeypatch.setenv("GEARMAND_SERVER_PEM", str(certs.server_cert))
    monkeypatch.setenv("GEARMAND_SERVER_KEY", str(certs.server_key))
    monkeypatch.setenv("GEARMAND_CA_CERTIFICATE", str(certs.ca))
    cfg = parse_args(["--ssl"]).config
    assert cfg.ssl_certificate == str(certs.server_cert)
    assert cfg.ssl_ca_file == str(certs.ca)
    with pytest.raises(ConfigError):
        client_context(TLSFiles(ca=str(certs.dir / "missing.pem")))


def test_cli_checks_tls_files(certs: Certs) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gearshift", "server", *args, "--check-args"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    good = run("--ssl", "--ssl-certificate", str(certs.server_cert), "--ssl-key",
               str(certs.server_key), "--ssl-ca-file", str(certs.ca))  # fmt: skip
    assert good.returncode == 0, good.stderr
    bad = run("--ssl", "--ssl-certificate", str(certs.dir / "nope.pem"))
    assert bad.returncode == 2 and "TLS certificate" in bad.stderr


def test_tls_worker_sees_jobs_submitted_over_http(tls_server: ServerThread, certs: Certs) -> None:
    worker = RawWorker(tls_server.port, {"tls.h": reverse}, context=certs.client_context("worker"))
    try:
        assert tls_server.server is not None
        http_port = tls_server.server.http_addresses[0][1]
        reply = http_raw(
            http_port, "POST", "/tls.h", b"abc", version="HTTP/1.1",
            context=certs.client_context("app"),
        )  # fmt: skip
        assert (reply.status, reply.body, reply.header("X-Gearman-Command")) == (
            200, b"cba", "WORK_COMPLETE",
        )  # fmt: skip
        wait_for(lambda: worker.done == 1)
    finally:
        worker.close()


def test_http_submission_obeys_function_rules(certs: Certs) -> None:
    from gearshift.server.access import AccessPolicy, FunctionRule

    policy = AccessPolicy(
        enabled=True,
        functions=(FunctionRule("paid.*", frozenset({"worker"}), frozenset({"app"})),),
    )
    with ServerThread(
        **certs.server_options(),
        http=True,
        http_port=0,
        access=policy,
    ) as srv:
        assert srv.server is not None
        port = srv.server.http_addresses[0][1]
        bg = {"X-Gearman-Background": "true"}
        denied = http_raw(port, "POST", "/paid.x", b"1", bg, context=certs.client_context("ops"))
        assert (denied.status, denied.header("X-Gearman-Command")) == (403, "ERROR")
        assert denied.body.startswith(b"PERMISSION_DENIED")
        ok = http_raw(port, "POST", "/paid.x", b"1", bg, context=certs.client_context("app"))
        assert (ok.status, ok.header("X-Gearman-Command")) == (200, "JOB_CREATED")
        free = http_raw(port, "POST", "/free.x", b"1", bg, context=certs.client_context("ops"))
        assert free.status == 200


@pytest.mark.slow
def test_silent_peer_on_tls_port_is_dropped(tls_server: ServerThread) -> None:
    # It connects and never starts a handshake: the server gives up after 10 s.
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=40) as s:
        started = time.monotonic()
        try:
            assert s.recv(65536) == b""
        except ConnectionResetError:
            pass
        assert 5 < time.monotonic() - started < 35


def test_large_payload_over_tls(tls_server: ServerThread, certs: Certs) -> None:
    # TLS connections take the copying path for large payloads (no BufferedProtocol
    # switch under the TLS layer); what follows the payload must still arrive intact.
    payload = bytes(range(256)) * (8 * 1024)  # 2 MiB, NULs included
    with tls_connect(tls_server.port, certs.client_context("app")) as s:
        s.sendall(encode_request(T.ECHO_REQ, payload) + encode_request(T.ECHO_REQ, b"next"))
        decoder = Decoder()
        got: list[bytes] = []
        while len(got) < 2:
            data = s.recv(1 << 20)
            assert data, "connection closed"
            got += [ev.args[0] for ev in decoder.feed(data) if isinstance(ev, Packet)]
        assert got == [payload, b"next"]
