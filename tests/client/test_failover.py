"""Several servers: routing, failover before JOB_CREATED, ConnectionLost after it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import pytest

from gearshift import AsyncAdminClient, AsyncClient, Client, WorkerJob
from gearshift.errors import ConnectionLost, ServerUnavailable
from gearshift.testing import serve
from tests.client.conftest import make_worker, running
from tests.client.helpers import await_until
from tests.conftest import ServerFactory
from tests.procs import free_port


@pytest.fixture
async def hangup_server() -> AsyncIterator[str]:
    """A TCP server that reads the first request and hangs up without answering."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    yield f"127.0.0.1:{port}"
    srv.close()
    await srv.wait_closed()


async def test_failover_before_job_created(
    make_any_server: ServerFactory, hangup_server: str
) -> None:
    live = make_any_server()
    dead = f"127.0.0.1:{free_port()}"

    async def echo(job: WorkerJob[bytes]) -> bytes:
        return job.data

    async with running(make_worker(live.address, {"echo": echo})):
        # Refused connection, then a server that drops us before JOB_CREATED.
        for first in (dead, hangup_server):
            async with AsyncClient([first, live.address], routing="failover") as client:
                handle = await client.submit_background("echo", b"bg")
                assert str(handle.server) == live.address
                job = await client.submit_job("echo", b"fg")
                assert job.handle is not None and str(job.handle.server) == live.address
                assert await job.result(timeout=20) == b"fg"
                # The failed server is now tried last, so the next submit goes straight on.
                assert await client.submit("echo", b"again", timeout=20) == b"again"


async def test_connection_lost_after_job_created_is_not_resubmitted(
    make_any_server: ServerFactory,
) -> None:
    first, second = make_any_server(), make_any_server()
    started = asyncio.Event()

    async def hang(job: WorkerJob[bytes]) -> bytes:
        started.set()
        await asyncio.sleep(30)
        return b""

    worker = make_worker(
        first.address, {"hang": hang}, reconnect_backoff=(0.05, 0.2), shutdown_timeout=0.5
    )
    async with (
        running(worker),
        AsyncClient([first.address, second.address], routing="failover") as client,
    ):
        job = await client.submit_job("hang", b"x")
        assert job.handle is not None and str(job.handle.server) == first.address
        await asyncio.wait_for(started.wait(), 20)
        first.kill()
        with pytest.raises(ConnectionLost):
            await job.result(timeout=20)
        # Nothing was sent to the second server behind our back.
        async with AsyncAdminClient(second.address) as admin:
            assert all(row.name != "hang" for row in await admin.status())
            assert await admin.show_jobs() == []
        # New submits go to the server that is still up.
        handle = await client.submit_background("other", b"y")
        assert str(handle.server) == second.address


async def test_no_server_reachable() -> None:
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    async with AsyncClient(dead, connect_timeout=5) as client:
        with pytest.raises(ServerUnavailable) as info:
            await client.submit("f", b"")
        assert "cannot connect" in str(info.value)
        with pytest.raises(ServerUnavailable):
            await client.submit_background("f", b"")
        with pytest.raises(ServerUnavailable):
            await client.echo()


async def test_hash_routing_is_sticky_and_spreads(make_any_server: ServerFactory) -> None:
    servers = [make_any_server(), make_any_server()]
    addresses = [s.address for s in servers]
    async with AsyncClient(addresses) as client:
        handles = {u: await client.submit_background("h", b"", unique=f"u{u}") for u in range(20)}
        per_server = Counter(str(h.server) for h in handles.values())
        assert set(per_server) == set(addresses)  # 20 keys land on both
        # The same (function, unique) reaches the same server and coalesces there.
        for u, handle in handles.items():
            again = await client.submit_background("h", b"", unique=f"u{u}")
            assert again == handle and again.server == handle.server
        # A client with the servers listed the other way round agrees.
        async with AsyncClient(list(reversed(addresses))) as other:
            again = await other.submit_background("h", b"", unique="u3")
            assert again.server == handles[3].server
        # Status by unique goes to the owning server when the function is given.
        status = await client.get_status_by_unique("u5", function="h")
        assert status.known
        status = await client.get_status_by_unique("u6")  # asks both
        assert status.known
    async with AsyncClient(addresses, routing="round_robin") as rr:
        used = Counter([str((await rr.submit_background("r", b"")).server) for _ in range(4)])
        assert used == Counter({addresses[0]: 2, addresses[1]: 2})


async def test_worker_survives_one_of_two_servers_dying(make_any_server: ServerFactory) -> None:
    a, b = make_any_server(), make_any_server()

    async def up(job: WorkerJob[bytes]) -> bytes:
        return job.data.upper()

    worker = make_worker([a.address, b.address], {"up": up}, reconnect_backoff=(0.05, 0.3))
    async with running(worker):
        a.kill()
        await await_until(lambda: len(worker.connected) == 1)
        async with AsyncClient(b.address) as client:
            assert await client.submit("up", b"still here", timeout=20) == b"STILL HERE"
        a.start()
        await await_until(lambda: len(worker.connected) == 2)
        async with AsyncClient(a.address) as client:
            assert await client.submit("up", b"back", timeout=20) == b"BACK"


def test_blocking_client_failover(make_gearmand: ServerFactory) -> None:
    live = make_gearmand()
    with Client([f"127.0.0.1:{free_port()}", live.address], routing="failover") as client:
        handle = client.submit_background("f", b"")
        assert str(handle.server) == live.address


@contextlib.contextmanager
def hung_listener() -> Iterator[int]:
    """A port whose accept queue is full: the kernel drops our SYN, connect hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_connect_timeout_and_keepalive(make_gearmand: ServerFactory) -> None:
    live = make_gearmand()
    with hung_listener() as port:
        async with AsyncClient(
            [f"127.0.0.1:{port}", live.address], routing="failover", connect_timeout=0.5
        ) as client:
            # 20 submits wait on the same hanging connect: they all move on to the next
            # server when it times out, instead of each timing out in turn (20 x 0.5 s).
            started = time.monotonic()
            handles = await asyncio.gather(
                *(client.submit_background("f", b"%d" % i) for i in range(20))
            )
            assert time.monotonic() - started < 4
            assert {str(h.server) for h in handles} == {live.address}
            conn = client._conns[client.servers[1]]
            sock = conn.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        async with AsyncClient(live.address, keepalive=False) as client:
            await client.echo()
            sock = client._conns[client.servers[0]].transport.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0


async def test_cancelled_connect_lets_the_waiting_submits_try_again() -> None:
    with hung_listener() as port:
        async with AsyncClient(f"127.0.0.1:{port}", connect_timeout=1.0) as client:
            first = asyncio.create_task(client.submit_background("f", b"1"))
            await asyncio.sleep(0.1)
            second = asyncio.create_task(client.submit_background("f", b"2"))
            await asyncio.sleep(0.1)
            first.cancel()
            # The waiter is not cancelled with it: it connects itself, and times out.
            with pytest.raises(ServerUnavailable):
                await second
            assert first.cancelled()


async def test_connection_that_ends_before_it_is_set_up_fails_over(
    make_gearmand: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server that hangs up at once, and a connect that is slow to hand the connection
    # over: the end arrives before the client has registered the connection. The
    # submit must still move on to the next server, not fail with a local error.
    from gearshift._async import net

    live = make_gearmand()

    async def rude(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    rude_srv = await asyncio.start_server(rude, "127.0.0.1", 0)
    rude_address = f"127.0.0.1:{rude_srv.sockets[0].getsockname()[1]}"
    real_open = net.open_transport

    async def slow_open(*args: object, **kwargs: object) -> object:
        opened = await real_open(*args, **kwargs)  # type: ignore[arg-type]
        await asyncio.sleep(0.1)  # the hang-up arrives meanwhile
        return opened

    monkeypatch.setattr(net, "open_transport", slow_open)
    try:
        async with AsyncClient([rude_address, live.address], routing="failover") as client:
            handle = await client.submit_background("f", b"x")
            assert str(handle.server) == live.address
    finally:
        rude_srv.close()
        await rude_srv.wait_closed()


async def test_a_draining_server_passes_the_job_to_the_next_one() -> None:
    async def echo(job: WorkerJob[bytes]) -> bytes:
        return job.data

    async with serve() as draining, serve() as live:
        async with AsyncClient([draining.address], codec=None) as c:
            # Not durable (memory queue) and no worker: the drain waits for it.
            await c.submit_background("hold", b"keeps the drain going")
        draining.server.request_shutdown(True)
        await await_until(lambda: draining.scheduler.draining)
        async with running(make_worker(live.address, {"echo": echo})):
            async with AsyncClient([draining.address, live.address], routing="failover") as c:
                handle = await c.submit_background("echo", b"bg")
                assert str(handle.server) == live.address
                assert await c.submit("echo", b"fg", timeout=20) == b"fg"
            async with AsyncClient([draining.address]) as c:
                with pytest.raises(ServerUnavailable, match="shutting down"):
                    await c.submit_background("echo", b"nowhere")
        draining.server.request_shutdown(False)  # cut the drain short
