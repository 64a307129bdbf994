"""Fixtures for the cluster tests: real gearshift processes sharing one PostgreSQL table.

Each test gets its own table (and so its own members table) and cluster name, dropped
afterwards.  ``Cluster.start(n)`` starts ``n`` servers with short leases.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import pytest

from gearshift.protocol.codec import Decoder, Packet, encode_request
from gearshift.protocol.packets import PacketType as T
from tests.procs import Gearshift

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
LEASE = 3.0
HEARTBEAT = 0.5

pytestmark = pytest.mark.postgres


def admin(port: int, command: str, timeout: float = 20.0) -> list[list[str]]:
    """Run one list-style admin command; return its rows split on tabs."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(command.encode() + b"\n")
        buf = b""
        while not buf.endswith(b".\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the admin connection")
            buf += chunk
            if buf.startswith(b"ERR"):
                raise AssertionError(buf.decode())
    return [line.split("\t") for line in buf.decode().splitlines()[:-1]]


def queued(port: int, function: str) -> int:
    """Jobs of ``function`` that exist on the server at ``port`` (admin ``status``)."""
    for row in admin(port, "status"):
        if row[0] == function:
            return int(row[1])
    return 0


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``cond`` until true; return the seconds it took."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - start


@dataclass
class Cluster:
    """Servers of one test cluster."""

    factory: Callable[..., Gearshift]
    table: str = field(default_factory=lambda: "cl_" + uuid.uuid4().hex[:10])
    name: str = field(default_factory=lambda: "c" + uuid.uuid4().hex[:8])
    servers: list[Gearshift] = field(default_factory=list)

    def args(self, lease: float = LEASE, heartbeat: float = HEARTBEAT) -> list[str]:
        return [
            "--queue",
            f"{PG_DSN}?table={self.table}",
            "--cluster-name",
            self.name,
            "--cluster-lease",
            str(lease),
            "--cluster-heartbeat",
            str(heartbeat),
            "--verbose",
            "INFO",
        ]

    def start(self, n: int, lease: float = LEASE, heartbeat: float = HEARTBEAT) -> list[Gearshift]:
        new = [self.factory(*self.args(lease, heartbeat)) for _ in range(n)]
        self.servers += new
        return new

    def members(self, port: int) -> dict[str, list[str]]:
        """``cluster`` as seen from ``port``: node -> [epoch, state, age, remaining, jobs, addr]."""
        return {row[0]: row[1:] for row in admin(port, "cluster")}

    def jobs_by_port(self, port: int) -> dict[int, int]:
        """Stored jobs per member, keyed by the member's listening port."""
        out: dict[int, int] = {}
        for row in self.members(port).values():
            out[int(row[5].rsplit(":", 1)[1])] = int(row[4])
        return out


@pytest.fixture
async def cluster(make_gearshift: Callable[..., Gearshift]) -> AsyncIterator[Cluster]:
    c = Cluster(make_gearshift)
    yield c
    for srv in c.servers:
        srv.kill()
    import asyncpg

    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {c.table}, {c.table}_members")
    finally:
        await conn.close()


# ------------------------------------------------------------------ raw clients/workers


@dataclass
class Runs:
    """What the workers ran: unique -> times run."""

    count: Counter[bytes] = field(default_factory=Counter)
    done_at: dict[bytes, float] = field(default_factory=dict)

    def record(self, unique: bytes) -> None:
        self.count[unique] += 1
        self.done_at.setdefault(unique, time.monotonic())

    @property
    def total(self) -> int:
        return sum(self.count.values())

    def duplicates(self) -> int:
        return sum(n - 1 for n in self.count.values() if n > 1)


async def worker(port: int, function: bytes, runs: Runs, stop: asyncio.Event) -> None:
    """A raw-protocol worker on one server until ``stop`` or the server goes away."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    dec = Decoder()
    grab = encode_request(T.GRAB_JOB_UNIQ)
    writer.write(encode_request(T.CAN_DO, function) + grab)
    try:
        while not stop.is_set():
            try:
                chunk = await asyncio.wait_for(reader.read(65536), 0.5)
            except TimeoutError:
                continue
            if not chunk:
                return
            out = []
            for pkt in dec.feed(chunk):
                assert isinstance(pkt, Packet)
                if pkt.type == T.JOB_ASSIGN_UNIQ:
                    handle, _, unique, _ = pkt.args
                    runs.record(unique)
                    out.append(encode_request(T.WORK_COMPLETE, handle, b""))
                    out.append(grab)
                elif pkt.type == T.NO_JOB:
                    out.append(encode_request(T.PRE_SLEEP))
                elif pkt.type == T.NOOP:
                    out.append(grab)
            if out:
                writer.write(b"".join(out))
    except (ConnectionError, OSError):
        return
    finally:
        writer.close()


async def submit(
    port: int, function: bytes, uniques: list[bytes], acked: set[bytes], window: int = 100
) -> list[bytes]:
    """Pipeline background submits; add acknowledged uniques to ``acked``.

    Returns the uniques that were not acknowledged (the server went away).
    """
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return uniques
    dec = Decoder()
    sent = acks = 0
    try:
        while acks < len(uniques):
            burst = []
            while sent < len(uniques) and sent - acks < window:
                burst.append(encode_request(T.SUBMIT_JOB_BG, function, uniques[sent], b"x"))
                sent += 1
            if burst:
                writer.write(b"".join(burst))
            chunk = await reader.read(65536)
            if not chunk:
                break
            for pkt in dec.feed(chunk):
                assert isinstance(pkt, Packet)
                assert pkt.type == T.JOB_CREATED, pkt
                acked.add(uniques[acks])
                acks += 1
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
    return uniques[acks:]


def ports_alive(servers: list[Gearshift]) -> Iterator[int]:
    for srv in servers:
        if srv.proc is not None and srv.proc.poll() is None:
            yield srv.port
