"""Access control: protected admin commands, per-function rules, HTTP cancel.

A real non-loopback source address is needed: the fixture puts 10.203.0.1/32 on the
loopback interface (root only; it never leaves this machine) and removes it afterwards.
The server listens on 127.0.0.1 and 10.203.0.1; connections to the second address come
from 10.203.0.1, which the server sees as a non-loopback peer.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from gearshift.protocol.codec import Decoder, Packet, encode_request
from gearshift.protocol.packets import PacketType as T
from gearshift.server.access import AccessPolicy, FunctionRule
from gearshift.testing import ServerThread
from tests.ops.conftest import Certs, RawWorker, read_admin, reverse

OTHER = "10.203.0.1"
PROTECTED = [
    ("cancel job H:none:1", "ERR UNKNOWN_JOB"),
    ("drop function acl.f", "ERR function not found"),
    ("maxqueue acl.f 5", "OK"),
    ("create function acl.f", "OK"),
]


@pytest.fixture(scope="module")
def other_address() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to add a non-loopback address to lo")
    added = subprocess.run(
        ["ip", "addr", "add", f"{OTHER}/32", "dev", "lo"], capture_output=True, text=True
    )
    if added.returncode != 0 and "exists" not in added.stderr:
        pytest.skip(f"cannot add {OTHER} to lo: {added.stderr.strip()}")
    try:
        yield OTHER
    finally:
        if added.returncode == 0:
            subprocess.run(["ip", "addr", "del", f"{OTHER}/32", "dev", "lo"], check=False)


def port_of(server: ServerThread, host: str) -> int:
    assert server.server is not None
    return next(p for h, p in server.server.addresses if h == host)


def connect(server: ServerThread, host: str, ctx: ssl.SSLContext | None = None) -> socket.socket:
    sock = socket.create_connection(
        (host, port_of(server, host)), timeout=20, source_address=(host, 0)
    )
    if ctx is not None:
        return ctx.wrap_socket(sock, server_hostname="localhost")
    return sock


def admin_from(
    server: ServerThread, host: str, line: str, ctx: ssl.SSLContext | None = None
) -> str:
    with connect(server, host, ctx) as s:
        s.sendall(line.encode() + b"\r\n")
        return read_admin(s)


def first_packet(sock: socket.socket, packet: bytes) -> Packet:
    sock.sendall(packet)
    decoder = Decoder()
    while True:
        data = sock.recv(65536)
        assert data, "closed"
        for ev in decoder.feed(data):
            assert isinstance(ev, Packet)
            return ev


@pytest.fixture
def guarded(other_address: str) -> Iterator[ServerThread]:
    policy = AccessPolicy(enabled=True, admin=frozenset({"ops"}), http_token="s3cret")
    with ServerThread(listen=f"127.0.0.1,{other_address}", access=policy, http=True, http_port=0,
                      http_listen=f"127.0.0.1,{other_address}") as srv:  # fmt: skip
        yield srv


@pytest.mark.parametrize(("line", "allowed"), PROTECTED)
def test_protected_admin_refused_from_non_loopback(
    guarded: ServerThread, line: str, allowed: str
) -> None:
    reply = admin_from(guarded, OTHER, line)
    assert reply.startswith("ERR PERMISSION_DENIED"), reply
    assert admin_from(guarded, "127.0.0.1", line).startswith(allowed)


def test_shutdown_refused_from_non_loopback_then_allowed_from_loopback(
    guarded: ServerThread,
) -> None:
    assert admin_from(guarded, OTHER, "shutdown").startswith("ERR PERMISSION_DENIED")
    assert guarded.server is not None and guarded.server._shutdown_task is None
    assert admin_from(guarded, "127.0.0.1", "shutdown").startswith("OK")
    assert guarded._thread is not None
    guarded._thread.join(20)
    assert not guarded._thread.is_alive()


def test_read_only_admin_open_to_everyone(guarded: ServerThread) -> None:
    assert admin_from(guarded, OTHER, "status").endswith(".\n")
    assert admin_from(guarded, OTHER, "workers").endswith(".\n")
    assert admin_from(guarded, OTHER, "version").startswith("OK ")


def test_access_off_by_default_like_gearmand(other_address: str) -> None:
    with ServerThread(listen=f"127.0.0.1,{other_address}") as srv:
        for line, allowed in PROTECTED:
            assert admin_from(srv, OTHER, line).startswith(allowed), line
        # gearmand's own rule stays: shutdown only from loopback (unknown elsewhere).
        assert admin_from(srv, OTHER, "shutdown").startswith("ERR UNKNOWN_COMMAND")


@pytest.fixture
def guarded_tls(other_address: str, certs: Certs) -> Iterator[ServerThread]:
    policy = AccessPolicy(
        enabled=True,
        admin=frozenset({"ops"}),
        functions=(FunctionRule("secret*", frozenset({"worker"}), frozenset({"app"})),),
    )
    with ServerThread(
        listen=f"127.0.0.1,{other_address}",
        access=policy,
        **certs.server_options(),
    ) as srv:
        yield srv


@pytest.mark.parametrize(("line", "allowed"), [*PROTECTED, ("shutdown graceful", "OK")])
def test_protected_admin_allowed_for_authorised_certificate(
    guarded_tls: ServerThread, certs: Certs, line: str, allowed: str
) -> None:
    refused = admin_from(guarded_tls, OTHER, line, certs.client_context("app"))
    assert refused.startswith("ERR PERMISSION_DENIED"), refused
    reply = admin_from(guarded_tls, OTHER, line, certs.client_context("ops"))
    assert reply.startswith(allowed), reply


def test_function_rules_by_certificate_name(guarded_tls: ServerThread, certs: Certs) -> None:
    # An 'app' may not register for secret functions ...
    with connect(guarded_tls, "127.0.0.1", certs.client_context("app")) as s:
        err = first_packet(s, encode_request(T.CAN_DO, b"secret.a"))
        assert err.type == T.ERROR and err.args[0] == b"PERMISSION_DENIED"
        # ... but may submit to them,
        created = first_packet(s, encode_request(T.SUBMIT_JOB_BG, b"secret.a", b"", b"x"))
        assert created.type == T.JOB_CREATED
        # and anything goes for functions no rule names.
        s.sendall(encode_request(T.CAN_DO, b"public"))
        echo = first_packet(s, encode_request(T.ECHO_REQ, b"e"))
        assert echo.type == T.ECHO_RES
    # A 'worker' may register but not submit.
    with connect(guarded_tls, "127.0.0.1", certs.client_context("worker")) as s:
        err = first_packet(s, encode_request(T.SUBMIT_JOB, b"secret.a", b"", b"y"))
        assert err.type == T.ERROR and err.args[0] == b"PERMISSION_DENIED"
    worker = RawWorker(
        port_of(guarded_tls, "127.0.0.1"),
        {"secret.a": reverse},
        context=certs.client_context("worker"),
    )
    try:
        with connect(guarded_tls, "127.0.0.1", certs.client_context("ops")) as s:
            s.sendall(b"workers\r\n")
            listing = read_admin(s)
        assert "secret.a" in listing
        assert listing.count("secret.a") == 1
    finally:
        worker.close()


def http_delete(server: ServerThread, host: str, handle: str, token: str | None = None) -> int:
    assert server.server is not None
    port = next(p for h, p in server.server.http_addresses if h == host)
    req = urllib.request.Request(f"http://{host}:{port}/api/jobs/{handle}", method="DELETE")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=20) as res:
            json.loads(res.read())
            return int(res.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_http_cancel_needs_authorisation(guarded: ServerThread) -> None:
    handles = []
    with connect(guarded, "127.0.0.1") as s:
        for i in range(3):
            created = first_packet(s, encode_request(T.SUBMIT_JOB_BG, b"acl.c", b"", b"%d" % i))
            handles.append(created.args[0].decode())
    # urllib does not bind a source address, so the OTHER address sees itself as source.
    assert http_delete(guarded, OTHER, handles[0]) == 403
    assert http_delete(guarded, OTHER, handles[0], token="wrong") == 403
    assert http_delete(guarded, OTHER, handles[0], token="s3cret") == 200
    assert http_delete(guarded, "127.0.0.1", handles[1]) == 200
    assert http_delete(guarded, "127.0.0.1", "H:nope:1") == 404
    with connect(guarded, "127.0.0.1") as s:
        s.sendall(b"show jobs\r\n")
        rows = read_admin(s)
    ignored = {line.split("\t")[0] for line in rows.splitlines() if line.endswith("\t1\t0")}
    assert set(handles[:2]) <= ignored


@pytest.mark.parametrize(("line", "allowed"), [*PROTECTED, ("shutdown", "OK")])
def test_untrusted_loopback_needs_an_identity(certs: Certs, line: str, allowed: str) -> None:
    # Without the extra address (no root): loopback made untrusted gives the same paths.
    policy = AccessPolicy(enabled=True, admin=frozenset({"ops"}), admin_from_loopback=False)
    with ServerThread(
        access=policy,
        **certs.server_options(),
    ) as srv:
        refused = admin_from(srv, "127.0.0.1", line, certs.client_context("app"))
        assert refused.startswith("ERR PERMISSION_DENIED"), refused
        reply = admin_from(srv, "127.0.0.1", line, certs.client_context("ops"))
        assert reply.startswith(allowed), reply


def test_refusals_are_logged_at_a_bounded_rate(
    guarded_tls: ServerThread, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    # A client retrying a refused CAN_DO in a loop must not flood the log.
    assert guarded_tls.server is not None
    gate = guarded_tls.server.scheduler.gate
    with caplog.at_level(logging.WARNING, logger="gearshift.server.access"):
        with connect(guarded_tls, "127.0.0.1", certs.client_context("app")) as s:
            for _ in range(30):
                err = first_packet(s, encode_request(T.CAN_DO, b"secret.flood"))
                assert err.args[0] == b"PERMISSION_DENIED"
            lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
            assert len(lines) == 1 and "secret.flood" in lines[0]
            # The next line that is let through counts the ones left out.
            gate.log_interval = 0.0
            first_packet(s, encode_request(T.CAN_DO, b"secret.flood"))
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 2
    assert lines[1].endswith("; 29 more refusals since the last such line"), lines[1]
