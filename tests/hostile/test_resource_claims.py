"""A 12-byte header must not make the server reserve the size it announces.

Against a real ``gearshift server`` process, over real sockets: peers announcing a
gigabyte, or thousands of peers announcing 300 KiB each, cost the server what they
actually sent; types whose arguments are small by nature are refused from 8 KiB on, as
gearmand refuses them; real large payloads, fast or trickled, still get through.

Memory is read from ``/proc/PID/status``: ``VmHWM`` (peak resident) for what was
touched, ``VmPeak`` (peak address space) for what was reserved.  An untouched
reservation costs no RAM until it is written, but the peer decides when that happens,
and under strict overcommit it is what runs out; so both are held to the budget.
"""

from __future__ import annotations

import re
import resource
import socket
import ssl
import struct
import subprocess
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from gearshift.protocol.codec import encode_request
from gearshift.protocol.packets import ARGC, PACKET_ARGS, PacketType
from tests.conftest import ServerFactory

T = PacketType
KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
#: gearmand's limit (its 8 KiB receive buffer), stated here independently of the code.
LIMIT = 8192
#: Types whose last argument is an opaque payload: only that may be large.
PAYLOAD = [t for t in T if PACKET_ARGS[t][-1:] == ("data",)]
NO_PAYLOAD = [t for t in T if t not in PAYLOAD]
#: What the reader logs when it refuses a packet for its size.
REFUSAL = re.compile(r"body of \d+ bytes exceeds \d+|argument is longer than \d+ bytes")


def header(ptype: int, size: int) -> bytes:
    return b"\0REQ" + struct.pack(">II", ptype, size)


def memory(pid: int) -> dict[str, int]:
    """The Vm* lines of /proc/PID/status, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.startswith("Vm"):
            out[key] = int(value.split()[0]) * KIB
    return out


def growth(pid: int, idle: dict[str, int]) -> tuple[int, int]:
    """How much RAM and address space the server took since ``idle``, peaks included."""
    now = memory(pid)
    ram = max(now["VmRSS"] - idle["VmRSS"], now["VmHWM"] - idle["VmHWM"])
    space = max(now["VmSize"] - idle["VmSize"], now["VmPeak"] - idle["VmPeak"])
    return ram, space


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact(s: socket.socket | ssl.SSLSocket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = s.recv_into(view[got:])
        if not k:
            raise EOFError(f"connection closed after {got} of {n} bytes")
        got += k
    return bytes(buf)


def recv_packet(s: socket.socket | ssl.SSLSocket) -> tuple[int, list[bytes]]:
    magic, ptype, size = struct.unpack(">4sII", recv_exact(s, 12))
    assert magic == b"\0RES", magic
    body = recv_exact(s, size) if size else b""
    argc = ARGC[ptype]
    return ptype, body.split(b"\0", argc - 1) if argc else []


def closed(s: socket.socket | ssl.SSLSocket, within: float = 5.0) -> bool:
    """True once the server has closed ``s`` (EOF or reset), False if still open."""
    s.settimeout(within)
    try:
        while s.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


def outcome(port: int, data: bytes) -> str:
    """Send ``data`` then an ECHO_REQ: "served" if the echo comes back, else "dropped"."""
    with connect(port) as s:
        s.sendall(data + encode_request(T.ECHO_REQ, b"after"))
        try:
            while True:
                ptype, args = recv_packet(s)
                if ptype == T.ECHO_RES and args == [b"after"]:
                    return "served"
        except (EOFError, OSError):
            return "dropped"


class Bystander(threading.Thread):
    """ECHO round trips, one after another on a connection of its own; ``worst`` is the
    slowest.  ``settle()`` returns once a few more have completed, by when the server
    has read everything other peers sent before the call."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.sock = connect(port)
        self.worst = 0.0
        self.trips = 0
        self.halt = threading.Event()

    def run(self) -> None:
        ping = encode_request(T.ECHO_REQ, b"still there?")
        while not self.halt.is_set():
            started = time.perf_counter()
            self.sock.sendall(ping)
            recv_exact(self.sock, len(ping))
            self.worst = max(self.worst, time.perf_counter() - started)
            self.trips += 1
            time.sleep(0.002)

    def settle(self, trips: int = 3) -> None:
        target = self.trips + trips
        deadline = time.monotonic() + 30
        while self.trips < target and self.is_alive() and time.monotonic() < deadline:
            time.sleep(0.001)

    def __enter__(self) -> Bystander:
        self.start()
        self.settle()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt.set()
        self.join(10)
        self.sock.close()


def claims(port: int, kinds: dict[str, bytes], *, each: int = 4) -> Iterator[str]:
    """Open ``each`` connections per kind, send the kind's bytes on each, keep them open;
    yields after every one (so the caller can measure before the next)."""
    held: list[socket.socket] = []
    try:
        for kind, data in kinds.items():
            for _ in range(each):
                s = connect(port)
                held.append(s)
                s.sendall(data)
                yield kind
    finally:
        for s in held:
            s.close()


GIGABYTE_CLAIMS = {
    "CAN_DO announcing 1 GiB": header(T.CAN_DO, GIB),
    "SUBMIT_JOB header alone": header(T.SUBMIT_JOB, GIB),
    "SUBMIT_JOB function, unique, 4 KiB": header(T.SUBMIT_JOB, GIB) + b"claim\0u\0" + b"x" * 4096,
}


@pytest.mark.timeout(60)
def test_gigabyte_claims_cost_nothing_and_stall_nobody(make_gearshift: ServerFactory) -> None:
    # Before: 4 such claims took the RSS from 28 MiB to 4 GiB, and each stalled every
    # other peer for seconds while the event loop zeroed the buffer.
    srv = make_gearshift("--verbose", "WARNING")
    assert srv.proc is not None
    pid = srv.proc.pid
    with Bystander(srv.port) as bystander:
        idle = memory(pid)
        for kind in claims(srv.port, GIGABYTE_CLAIMS):
            bystander.settle()
            ram, space = growth(pid, idle)
            # A dozen connections and 16 KiB of payload: far below one MiB in fact.
            assert ram < 4 * MIB, f"{kind}: resident memory grew by {ram // KIB} KiB"
            assert space < 4 * MIB, f"{kind}: address space grew by {space // KIB} KiB"
            assert bystander.worst < 0.050, f"{kind}: an echo waited {bystander.worst:.3f} s"
    assert bystander.worst < 0.050, f"an echo waited {bystander.worst:.3f} s"
    assert "CAN_DO body of 1073741824 bytes exceeds 8192" in srv.log_text()


#: Enough for 5,000 connections, the bystanders and the test's own files.
FDS_NEEDED = 5000 + 200


@pytest.mark.timeout(120)
def test_five_thousand_claims_cost_what_idle_connections_cost(
    make_gearshift: ServerFactory,
) -> None:
    # Before: 5,000 connections announcing 300 KiB each took 1.5 GiB.
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < FDS_NEEDED:
        pytest.skip(f"needs {FDS_NEEDED} file descriptors, `ulimit -n` is {soft}")
    srv = make_gearshift("-b", "4096", "--verbose", "ERROR")
    assert srv.proc is not None
    pid = srv.proc.pid
    size = 300 * KIB
    kinds = [
        header(T.SUBMIT_JOB, size),  # the header alone
        header(T.SUBMIT_JOB_BG, size) + b"f\0u\0" + b"x" * KIB,  # arguments, 1 KiB of data
        header(T.ECHO_REQ, size) + b"x" * KIB,
    ]
    with connect(srv.port) as probe:
        ping = encode_request(T.ECHO_REQ, b"ping")
        probe.sendall(ping)
        recv_exact(probe, len(ping))
        idle = memory(pid)
        socks: list[socket.socket] = []
        try:
            for i in range(5000):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
                socks.append(s)
                s.sendall(kinds[i % 3])
            # Then a little more of each payload: its buffer grows, by what arrives.
            for s in socks[2::3]:
                s.sendall(b"y" * KIB)
            for _ in range(20):  # the server reads the crowd between these
                probe.sendall(ping)
                recv_exact(probe, len(ping))
            time.sleep(0.5)
            ram, space = growth(pid, idle)
        finally:
            for s in socks:
                s.close()
    # An idle connection costs about 4 KiB here (its transport, protocol and peer
    # objects: +18 MiB for 5,000 that only echo).  A claim adds what it sent (up to
    # 2 KiB) and the small object that receives it, so 8 KiB each is the budget for
    # RAM; a payload's buffer may reserve up to twice what arrived plus a 16 KiB floor
    # of address space that stays untouched until written.
    assert ram < 5000 * 8 * KIB, f"resident memory grew by {ram // MIB} MiB"
    assert space < 5000 * (8 + 16) * KIB, f"address space grew by {space // MIB} MiB"


def _submit(ptype: int, function: bytes, data: bytes = b"data") -> bytes:
    return encode_request(ptype, function, b"", data)


@pytest.mark.interop
@pytest.mark.timeout(60)
def test_argument_limits_match_gearmand(make_any_server: ServerFactory) -> None:
    # The same expectations hold for gearshift and for gearmand 1.1.20 (the reference).
    srv = make_any_server()
    cases: dict[str, tuple[bytes, str]] = {}
    for ptype in (T.CAN_DO, T.CANT_DO, T.SET_CLIENT_ID, T.OPTION_REQ, T.WORK_FAIL):
        cases[f"{ptype.name} {LIMIT}"] = (encode_request(ptype, b"a" * LIMIT), "served")
        cases[f"{ptype.name} {LIMIT + 1}"] = (encode_request(ptype, b"a" * (LIMIT + 1)), "dropped")
    for ptype in (T.SUBMIT_JOB_BG, T.SUBMIT_JOB):
        function = b"f" * (LIMIT - 1)
        cases[f"{ptype.name} function {LIMIT - 1}"] = (_submit(ptype, function), "served")
        cases[f"{ptype.name} function {LIMIT}"] = (_submit(ptype, function + b"f"), "dropped")
    handle = b"H:" + b"h" * (LIMIT - 3)
    for ptype in (T.WORK_COMPLETE, T.WORK_DATA):
        cases[f"{ptype.name} handle {LIMIT - 1}"] = (encode_request(ptype, handle, b"r"), "served")
        cases[f"{ptype.name} handle {LIMIT}"] = (
            encode_request(ptype, handle + b"h", b"r"),
            "dropped",
        )
    # Payloads may be any size.
    big = bytes(range(256)) * (MIB // 256)
    cases["SUBMIT_JOB_BG data 1 MiB"] = (_submit(T.SUBMIT_JOB_BG, b"f", big), "served")
    cases["ECHO_REQ 1 MiB"] = (encode_request(T.ECHO_REQ, big), "served")
    got = {name: outcome(srv.port, data) for name, (data, _) in cases.items()}
    assert got == {name: expected for name, (_, expected) in cases.items()}


def _body(ptype: T, size: int) -> bytes:
    """A well-formed body of ``size`` bytes for a type without a payload."""
    argc = ARGC[ptype]
    lead = b"1\0" * max(argc - 1, 0)
    return lead + b"a" * (size - len(lead))


def _leading(ptype: T, index: int, length: int) -> bytes:
    """The arguments of ``ptype`` before its payload, the one at ``index`` ``length``
    bytes long (its NUL not included), those before it one byte each."""
    return b"a\0" * index + b"f" * length


@pytest.mark.timeout(60)
def test_every_type_is_held_to_its_limits(make_gearshift: ServerFactory) -> None:
    srv = make_gearshift("--verbose", "WARNING")
    # At the limits the reader refuses nothing (the scheduler still judges the packet
    # on its merits: an unknown handle is an error, a GET_STATUS handle gearmand could
    # not format drops the peer, as gearmand does).
    for ptype in NO_PAYLOAD:
        outcome(srv.port, header(ptype, LIMIT) + _body(ptype, LIMIT))
    for ptype in PAYLOAD:
        heads = ARGC[ptype] - 1
        for i in range(heads):
            body = _leading(ptype, i, LIMIT - 1) + b"\0" + b"a\0" * (heads - i - 1) + b"data"
            outcome(srv.port, header(ptype, len(body)) + body)
    assert not REFUSAL.search(srv.log_text()), srv.log_text()[-2000:]
    # Over them, a peer is dropped as soon as enough has arrived to tell: the header
    # for a type without a payload, 8192 bytes of an argument before a payload.
    expected = []
    for ptype in NO_PAYLOAD:
        with connect(srv.port) as s:
            s.sendall(header(ptype, LIMIT + 1))
            assert closed(s), ptype.name
        expected.append(f"{ptype.name} body of {LIMIT + 1} bytes exceeds {LIMIT}")
    for ptype in PAYLOAD:
        names = PACKET_ARGS[ptype]
        for i in range(len(names) - 1):
            with connect(srv.port) as s:
                s.sendall(header(ptype, GIB) + _leading(ptype, i, LIMIT))
                assert closed(s), (ptype.name, names[i])
            expected.append(
                f"{ptype.name} of {GIB} bytes: its {names[i]} argument is longer than"
                f" {LIMIT - 1} bytes"
            )
    log = srv.log_text()
    assert [line for line in expected if line not in log] == []


def _pattern(size: int) -> bytes:
    return (bytes(range(251)) * (size // 251 + 1))[:size]


@pytest.mark.timeout(60)
def test_large_payloads_that_really_arrive_still_work(make_gearshift: ServerFactory) -> None:
    srv = make_gearshift()
    client = connect(srv.port, timeout=30)
    worker = connect(srv.port, timeout=30)
    worker.sendall(encode_request(T.CAN_DO, b"big"))
    # 64 MiB in, to the worker, and a 64 MiB result back, as fast as they come.
    payload = _pattern(64 * MIB)
    client.sendall(encode_request(T.SUBMIT_JOB, b"big", b"", payload))
    ptype, (handle,) = recv_packet(client)
    assert ptype == T.JOB_CREATED
    worker.sendall(encode_request(T.GRAB_JOB))
    assert recv_packet(worker) == (T.JOB_ASSIGN, [handle, b"big", payload])
    result = payload[::-1]
    worker.sendall(encode_request(T.WORK_COMPLETE, handle, result))
    assert recv_packet(client) == (T.WORK_COMPLETE, [handle, result])
    # 1 MiB trickled: the function name a byte at a time, the data in 997-byte pieces.
    payload = _pattern(MIB + 13)
    packet = encode_request(T.SUBMIT_JOB_BG, b"big", b"trickled", payload)
    for i in range(12 + 12):
        client.sendall(packet[i : i + 1])
        time.sleep(0.001)
    for n, at in enumerate(range(24, len(packet), 997)):
        client.sendall(packet[at : at + 997])
        if n % 16 == 0:
            time.sleep(0.001)
    ptype, (handle,) = recv_packet(client)
    assert ptype == T.JOB_CREATED
    worker.sendall(encode_request(T.GRAB_JOB_UNIQ))
    assert recv_packet(worker) == (T.JOB_ASSIGN_UNIQ, [handle, b"big", b"trickled", payload])
    client.close()
    worker.close()


@pytest.fixture(scope="module")
def server_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", "key.pem", "-out", "cert.pem", "-days", "2", "-subj",
         "/CN=localhost"],
        cwd=d, check=True, capture_output=True,
    )  # fmt: skip
    return d / "cert.pem", d / "key.pem"


@pytest.mark.timeout(60)
def test_tls_connections_get_the_same_protection(
    make_gearshift: ServerFactory, server_cert: tuple[Path, Path]
) -> None:
    cert, key = server_cert
    srv = make_gearshift(
        "--ssl", "--ssl-certificate", str(cert), "--ssl-key", str(key), "--verbose", "WARNING"
    )
    assert srv.proc is not None
    pid = srv.proc.pid
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE

    def tls() -> ssl.SSLSocket:
        return ctx.wrap_socket(connect(srv.port, timeout=30), server_hostname="localhost")

    def echo(s: ssl.SSLSocket, data: bytes) -> None:
        s.sendall(encode_request(T.ECHO_REQ, data))
        assert recv_packet(s) == (T.ECHO_RES, [data])

    probe = tls()
    echo(probe, b"warm")
    idle = memory(pid)
    held = []
    for kind, data in GIGABYTE_CLAIMS.items():
        for _ in range(4):
            s = tls()
            held.append(s)
            s.sendall(data)
            echo(probe, b"sync")
            ram, space = growth(pid, idle)
            # The plain-TCP budget, plus the 256 KiB read buffer asyncio's TLS layer
            # reserves for every connection (untouched until records fill it).
            tls_buffers = (len(held) + 1) * 256 * KIB
            assert ram < 4 * MIB, f"{kind}: resident memory grew by {ram // KIB} KiB"
            assert space < 4 * MIB + tls_buffers, (
                f"{kind}: address space grew by {space // KIB} KiB"
            )
        if kind.startswith("CAN_DO"):
            assert all(closed(s) for s in held[-4:])
    # Real large payloads still arrive whole, fast or in small records.
    big = _pattern(8 * MIB)
    echo(probe, big)
    packet = encode_request(T.ECHO_REQ, big[: MIB + 5])
    for at in range(0, len(packet), 4093):
        probe.sendall(packet[at : at + 4093])
    assert recv_packet(probe) == (T.ECHO_RES, [big[: MIB + 5]])
    for s in [probe, *held]:
        s.close()
    assert "CAN_DO body of 1073741824 bytes exceeds 8192" in srv.log_text()


class _Sched:
    dirty = False


class _Conn:
    """Just what a ``_PayloadReceiver`` touches of its connection."""

    track_idle = False
    transport = None
    sched = _Sched()

    def __init__(self, reserved: int = 0) -> None:
        self.ran: list[tuple[int, bool, list[bytes]]] = []
        #: The server's reservation budget in use (see ``connection._RESERVE_TOTAL``).
        self.server = types.SimpleNamespace(payload_reserved=reserved)

    def run_packet(self, ptype: int, request: bool, args: list[bytes]) -> None:
        self.ran.append((ptype, request, args))


def test_payload_buffer_grows_with_what_arrives() -> None:
    # In process: whatever the read sizes, the room reserved is never more than twice
    # what has arrived plus the floor, and the payload ends up whole, in one buffer.
    from gearshift.server import connection

    conn = _Conn(reserved=connection._RESERVE_TOTAL)  # no budget left: grow as it comes
    size = 3 * MIB + 7
    payload = _pattern(size)
    receiver = connection._PayloadReceiver(
        conn,  # type: ignore[arg-type]
        T.SUBMIT_JOB,
        True,
        [b"f", b"u"],
        payload[:100],
        size,
    )
    floor = connection._GROW_FLOOR
    reads = [1, 4096, 100_000, 65536, 7, 1_000_000] * 10
    at = 100
    held = None
    for n in reads:
        if at == size:
            break
        received = receiver.fill
        view = receiver.get_buffer(-1)
        assert len(receiver.payload) <= 2 * received + floor
        n = min(n, len(view))
        view[:n] = payload[at : at + n]
        at += n
        if n == 1:
            held = view  # a view an event loop forgot to release: the next growth copies
        else:
            view.release()
        receiver.buffer_updated(n)
    while at < size:
        view = receiver.get_buffer(-1)
        n = len(view)
        view[:n] = payload[at : at + n]
        view.release()
        at += n
        receiver.buffer_updated(n)
    assert held is not None
    assert conn.ran == [(T.SUBMIT_JOB, True, [b"f", b"u", payload])]
    assert len(receiver.payload) == size


def test_small_payloads_are_reserved_within_a_server_wide_budget() -> None:
    # Up to 4 MiB a payload gets its whole (untouched) buffer at once, which saves the
    # copies of growing it; all such reservations together stay under 64 MiB, and each
    # is given back when its payload is complete or its peer goes.
    from gearshift.server import connection

    conn = _Conn()
    size = 1 * MIB
    payload = _pattern(size)
    receivers = []
    for _ in range(64):
        receivers.append(
            connection._PayloadReceiver(
                conn,  # type: ignore[arg-type]
                T.SUBMIT_JOB,
                True,
                [b"f", b"u"],
                payload[:10],
                size,
            )
        )
    assert conn.server.payload_reserved == 64 * MIB
    assert all(len(r.payload) == size for r in receivers)
    late = connection._PayloadReceiver(
        conn,  # type: ignore[arg-type]
        T.SUBMIT_JOB,
        True,
        [b"f", b"u"],
        payload[:10],
        size,
    )
    assert late.reserved == 0 and len(late.payload) == 10  # over budget: it grows
    first = receivers[0]
    view = first.get_buffer(-1)
    assert len(view) == size - 10
    view[:] = payload[10:]
    view.release()
    first.buffer_updated(size - 10)
    assert conn.ran == [(T.SUBMIT_JOB, True, [b"f", b"u", payload])]
    assert conn.server.payload_reserved == 63 * MIB
    for r in receivers[1:]:
        r.release()  # what connection_lost does
    assert conn.server.payload_reserved == 0
