"""Helpers for the operations tests: raw HTTP over sockets, test certificates, workers."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gearshift.protocol.codec import Decoder, Packet, encode_request
from gearshift.protocol.packets import PacketType

T = PacketType


@dataclass
class HttpReply:
    version: str
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def _read_reply(sock: socket.socket | ssl.SSLSocket, timeout: float) -> HttpReply:
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, status = lines[0].split(" ", 2)[:2]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = headers.get("content-length")
    if length is not None:
        while len(rest) < int(length):
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        rest = rest[: int(length)]
    return HttpReply(version, int(status), headers, rest)


def http_raw(
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    version: str = "HTTP/1.0",
    timeout: float = 20.0,
    context: ssl.SSLContext | None = None,
    host: str = "127.0.0.1",
) -> HttpReply:
    """One request on a fresh connection, written byte by byte as a user would type it."""
    lines = [f"{method} {path} {version}", "Host: localhost"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    plain = socket.create_connection((host, port), timeout=timeout)
    sock: socket.socket | ssl.SSLSocket = plain
    try:
        if context is not None:
            sock = context.wrap_socket(plain, server_hostname="localhost")
        sock.sendall(raw)
        return _read_reply(sock, timeout)
    finally:
        sock.close()
        plain.close()


class RawWorker:
    """A worker thread speaking the binary protocol; ``handler(data) -> (command, payload)``."""

    def __init__(
        self,
        port: int,
        functions: dict[str, Callable[[bytes], tuple[int, bytes]]],
        *,
        context: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        plain = socket.create_connection((host, port), timeout=30)
        self.sock: socket.socket | ssl.SSLSocket = plain
        if context is not None:
            self.sock = context.wrap_socket(plain, server_hostname="localhost")
        self.functions = functions
        self.stop = threading.Event()
        self.done = 0
        for name in functions:
            self.sock.sendall(encode_request(T.CAN_DO, name.encode()))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        decoder = Decoder()
        sock = self.sock
        sock.settimeout(0.2)
        sock.sendall(encode_request(T.GRAB_JOB_UNIQ))
        while not self.stop.is_set():
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            for ev in decoder.feed(data):
                if not isinstance(ev, Packet):
                    continue
                if ev.type == T.NO_JOB:
                    sock.sendall(encode_request(T.PRE_SLEEP))
                elif ev.type == T.NOOP:
                    sock.sendall(encode_request(T.GRAB_JOB_UNIQ))
                elif ev.type == T.JOB_ASSIGN_UNIQ:
                    handle, function, _unique, payload = ev.args
                    command, result = self.functions[function.decode()](payload)
                    if command == T.WORK_FAIL:
                        sock.sendall(encode_request(T.WORK_FAIL, handle))
                    else:
                        sock.sendall(encode_request(command, handle, result))
                    self.done += 1
                    sock.sendall(encode_request(T.GRAB_JOB_UNIQ))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def reverse(data: bytes) -> tuple[int, bytes]:
    return T.WORK_COMPLETE, data[::-1]


def fail(data: bytes) -> tuple[int, bytes]:
    return T.WORK_FAIL, b""


def admin(port: int, command: str, host: str = "127.0.0.1", **kw: object) -> str:
    """One admin command; returns the reply text (list replies up to the final '.')."""
    with socket.create_connection((host, port), timeout=10, **kw) as s:  # type: ignore[arg-type]
        s.sendall(command.encode() + b"\r\n")
        return read_admin(s)


def read_admin(s: socket.socket | ssl.SSLSocket) -> str:
    buf = b""
    s.settimeout(10)
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
        if buf.startswith((b"OK", b"ERR")) and buf.endswith(b"\n"):
            break
        if buf.endswith(b".\n"):
            break
    return buf.decode()


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


@dataclass
class Certs:
    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    rogue_ca: Path

    def client(self, name: str) -> tuple[Path, Path]:
        return self.dir / f"{name}.pem", self.dir / f"{name}.key"

    def server_options(self) -> dict[str, Any]:
        """ServerConfig fields for a TLS listener that verifies client certificates."""
        return {
            "ssl": True,
            "ssl_certificate": str(self.server_cert),
            "ssl_key": str(self.server_key),
            "ssl_ca_file": str(self.ca),
        }

    def server_flags(self) -> list[str]:
        """The same as ``gearshift server`` (and gearmand) command-line flags."""
        return [
            "--ssl",
            "--ssl-certificate",
            str(self.server_cert),
            "--ssl-key",
            str(self.server_key),
            "--ssl-ca-file",
            str(self.ca),
        ]

    def client_context(self, name: str | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if name is not None:
            cert, key = self.client(name)
            ctx.load_cert_chain(str(cert), str(key))
        return ctx


#: EC keys: generating them takes milliseconds, RSA keys take seconds on a busy machine.
_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _sign(cwd: Path, name: str, cn: str, ca: str, ext: str | None = None) -> None:
    _openssl("req", "-new", *_EC_KEY, "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=cwd)  # fmt: skip
    extra = ["-extfile", ext] if ext else []
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", *extra, cwd=cwd)  # fmt: skip


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Certs]:
    """A CA, a server certificate for localhost/127.0.0.1, clients 'ops', 'app', 'worker',
    and a client 'intruder' signed by another CA."""
    d = tmp_path_factory.mktemp("certs")
    for ca in ("ca", "rogue"):
        _openssl("req", "-x509", *_EC_KEY, "-nodes", "-keyout", f"{ca}.key",
                 "-out", f"{ca}.pem", "-days", "2", "-subj", f"/CN=test {ca}", cwd=d)  # fmt: skip
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1,IP:10.203.0.1\n")
    _sign(d, "server", "localhost", "ca", "server.ext")
    for name in ("ops", "app", "worker"):
        _sign(d, name, name, "ca")
    _sign(d, "intruder", "ops", "rogue")
    yield Certs(d, d / "ca.pem", d / "server.pem", d / "server.key", d / "rogue.pem")


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 20.0) -> None:
    """Wait until something accepts connections on ``port``."""

    def accepting() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    wait_for(accepting, timeout)
