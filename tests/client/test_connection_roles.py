"""AsyncClient, AsyncWorker and AsyncAdminClient over scripted servers: what each gets
when the connection drops, and how their packets share writes.

No sockets, no processes: ``ScriptedNetwork`` replaces ``net.open_transport`` with fake
transports whose "server" is a script answering each write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from gearshift import AsyncAdminClient, AsyncClient, AsyncWorker, JobState, WorkerJob
from gearshift._async.connection import RequestLost
from gearshift.errors import ClosedError, ConnectionLost, ServerUnavailable
from gearshift.protocol.codec import Decoder, Packet, encode_response
from gearshift.protocol.packets import PacketType as T
from tests.client.helpers import await_until
from tests.client.scripted import HANG_UP, HangUp, Script, ScriptedNetwork, packet_script

SUBMITS = {T.SUBMIT_JOB, T.SUBMIT_JOB_BG}


def _creating(on_submit: Callable[[int], bytes | HangUp | None] | None = None) -> Script:
    """A job server that answers OPTION_REQ and each submit with JOB_CREATED H:n
    (or with what ``on_submit(n)`` says)."""
    count = 0

    def answer(packet: Packet) -> bytes | HangUp | None:
        nonlocal count
        if packet.type == T.OPTION_REQ:
            return encode_response(T.OPTION_RES, packet.args[0])
        if packet.type in SUBMITS:
            count += 1
            if on_submit is not None:
                return on_submit(count)
            return encode_response(T.JOB_CREATED, b"H:%d" % count)
        return None

    return packet_script(answer)


def _types(data: bytes) -> list[int]:
    return [p.type for p in Decoder(allow_admin=False).feed(data) if isinstance(p, Packet)]


# -- client -------------------------------------------------------------------------------


async def test_client_moves_on_when_the_connection_drops_before_job_created(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net = ScriptedNetwork(monkeypatch)
    dropping = net.add(lambda: _creating(lambda n: HANG_UP))
    live = net.add(_creating)
    async with AsyncClient([dropping, live], routing="failover") as client:
        handle = await client.submit_background("f", b"x")
        job = await client.submit_job("f", b"y")
    assert handle.server == live and job.handle is not None and job.handle.server == live
    # The dropping server did get the submit: it was sent, then the connection went.
    assert T.SUBMIT_JOB_BG in _types(net.transports[dropping][0].data)


async def test_client_job_fails_when_the_connection_drops_after_job_created(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net = ScriptedNetwork(monkeypatch)
    first = net.add(_creating)
    second = net.add(_creating)
    async with AsyncClient([first, second], routing="failover") as client:
        job = await client.submit_job("f", b"x")
        net.transports[first][0].hang_up(ConnectionResetError("reset by peer"))
        with pytest.raises(ConnectionLost, match="while job H:1 ran") as caught:
            await job
        assert type(caught.value) is ConnectionLost  # not RequestLost: the server had it
        assert job.state is JobState.UNKNOWN
        # Nothing was resubmitted anywhere.
        assert net.transports[second] == []
        # A status request lost with its connection is a ConnectionLost too, not the
        # connection's private subclass.
        net.scripts[first] = lambda: packet_script(
            lambda p: HANG_UP if p.type == T.GET_STATUS else None
        )
        with pytest.raises(ConnectionLost) as status_lost:
            await client.get_status(job.handle or "")
        assert not isinstance(status_lost.value, RequestLost)


async def test_client_submits_made_in_one_pass_share_one_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net = ScriptedNetwork(monkeypatch)
    server = net.add(_creating)
    async with AsyncClient(server, exceptions=False) as client:
        await client.submit_background("f", b"first")  # connected
        handles = await asyncio.gather(*(client.submit_background("f", b"x") for _ in range(50)))
        assert len(set(handles)) == 50
    writes = [_types(w) for w in net.transports[server][0].writes]
    assert writes[0] == [T.SUBMIT_JOB_BG]
    assert writes[1:] == [[T.SUBMIT_JOB_BG] * 50]


async def test_client_close_gives_waiting_jobs_closed_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net = ScriptedNetwork(monkeypatch)
    server = net.add(_creating)
    client: AsyncClient[bytes] = AsyncClient(server)
    job = await client.submit_job("f", b"x")
    await client.aclose()
    with pytest.raises(ClosedError):
        await job
    assert net.transports[server][0].closing


async def test_client_echo_fails_over_and_reports_every_server_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net = ScriptedNetwork(monkeypatch)
    hanging = packet_script(lambda p: HANG_UP)
    a, b = net.add(lambda: hanging), net.add(lambda: hanging)
    async with AsyncClient([a, b], exceptions=False) as client:
        with pytest.raises(ServerUnavailable, match="no server answered"):
            await client.echo(b"hi")
    assert [len(net.transports[s]) for s in (a, b)] == [1, 1]


async def test_client_set_option_skips_a_connection_lost_meanwhile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net = ScriptedNetwork(monkeypatch)
    server = net.add(_creating)
    async with AsyncClient(server, exceptions=False) as client:
        await client.submit_background("f", b"x")  # connected
        net.transports[server][0].script = packet_script(
            lambda p: HANG_UP if p.type == T.OPTION_REQ else None
        )
        await client.set_option("exceptions")  # the connection drops instead of answering
        assert client._options == [b"exceptions"]
        await client.submit_background("f", b"y")  # a new connection, sent the option first
    assert _types(net.transports[server][1].data) == [T.OPTION_REQ, T.SUBMIT_JOB_BG]


# -- worker -------------------------------------------------------------------------------


def _job_server(jobs: int, log: list[int]) -> Callable[[], Script]:
    """A server with ``jobs`` jobs of function f; records every packet type it gets."""

    def make() -> Script:
        def answer(packet: Packet) -> bytes | HangUp | None:
            nonlocal jobs
            log.append(packet.type)
            if packet.type == T.GRAB_JOB_UNIQ:
                if jobs:
                    jobs -= 1
                    handle = b"H:%d" % jobs
                    return encode_response(T.JOB_ASSIGN_UNIQ, handle, b"f", b"", b"payload")
                return encode_response(T.NO_JOB)
            return None

        return packet_script(answer)

    return make


def _worker(server: Any, handler: Callable[[WorkerJob[bytes]], Any], **kwargs: Any) -> AsyncWorker:
    worker = AsyncWorker(server, reconnect_backoff=(0.01, 0.05), **kwargs)
    worker.register("f", handler)
    return worker


async def _run_until(worker: AsyncWorker, done: Callable[[], bool]) -> None:
    task = asyncio.create_task(worker.run(install_signal_handlers=False))
    try:
        await await_until(done, 10)
    finally:
        await worker.stop()
        await asyncio.wait_for(task, 10)


async def test_worker_sends_each_result_with_the_next_grab(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net = ScriptedNetwork(monkeypatch)
    log: list[int] = []
    server = net.add(_job_server(5, log))

    async def echo(job: WorkerJob[bytes]) -> bytes:
        return job.data

    await _run_until(_worker(server, echo), lambda: T.PRE_SLEEP in log)
    writes = [_types(w) for w in net.transports[server][0].writes]
    results = [w for w in writes if T.WORK_COMPLETE in w]
    assert len(results) == 5
    for write in results:  # every result shares its write with the GRAB that follows it
        assert write[write.index(T.WORK_COMPLETE) + 1 :][:1] == [T.GRAB_JOB_UNIQ], writes
    assert writes[0] == [T.CAN_DO]  # registration in one write
    assert writes[-1] == [T.RESET_ABILITIES]  # a graceful stop, then close


async def test_worker_reconnects_and_registers_again_when_a_grab_is_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net = ScriptedNetwork(monkeypatch)
    connections = 0

    def make() -> Script:
        nonlocal connections
        connections += 1
        if connections == 1:
            return packet_script(lambda p: HANG_UP if p.type == T.GRAB_JOB_UNIQ else None)
        return _job_server(1, [])()

    server = net.add(make)
    ran: list[bytes] = []

    async def echo(job: WorkerJob[bytes]) -> bytes:
        ran.append(job.data)
        return job.data

    worker = _worker(server, echo, client_id="again")
    await _run_until(worker, lambda: bool(ran) and len(net.transports[server]) == 2)
    first, second = net.transports[server]
    assert _types(first.data)[:2] == [T.SET_CLIENT_ID, T.CAN_DO]
    assert _types(second.data)[:2] == [T.SET_CLIENT_ID, T.CAN_DO]
    assert T.WORK_COMPLETE in _types(second.data)


async def test_worker_drops_the_result_of_a_job_whose_connection_was_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net = ScriptedNetwork(monkeypatch)
    log: list[int] = []
    server = net.add(_job_server(1, log))
    started, release, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()
    seen: list[WorkerJob[bytes]] = []

    async def slow(job: WorkerJob[bytes]) -> bytes:
        seen.append(job)
        started.set()
        await release.wait()
        job.send_data(b"late data")
        finished.set()
        return b"late result"

    worker = _worker(server, slow)
    task = asyncio.create_task(worker.run(install_signal_handlers=False))
    try:
        await asyncio.wait_for(started.wait(), 10)
        net.transports[server][0].hang_up()
        await await_until(lambda: len(net.transports[server]) == 2, 10)  # reconnected
        release.set()
        await asyncio.wait_for(finished.wait(), 10)
        await asyncio.sleep(0.05)
    finally:
        await worker.stop()
        await asyncio.wait_for(task, 10)
    # The job ran on, but nothing of it reached the old connection or the new one.
    assert T.WORK_DATA not in log and T.WORK_COMPLETE not in log
    assert isinstance(seen[0]._lost, ConnectionLost)


# -- admin --------------------------------------------------------------------------------


def _admin_server() -> Script:
    def script(data: bytes) -> bytes | HangUp | None:
        command = data.decode().strip()
        if command == "status":
            return b"f\t3\t1\t2\n.\n"
        if command == "version":
            return b"OK 1.1.20\n"
        return HANG_UP

    return script


async def test_admin_reply_loss_and_reconnect(monkeypatch: pytest.MonkeyPatch) -> None:
    net = ScriptedNetwork(monkeypatch)
    server = net.add(_admin_server)
    async with AsyncAdminClient(server) as admin:
        assert [(r.name, r.total, r.running, r.workers) for r in await admin.status()] == [
            ("f", 3, 1, 2)
        ]
        with pytest.raises(ConnectionLost) as lost:
            await admin.command("workers")  # the server hangs up instead of answering
        assert not isinstance(lost.value, RequestLost)
        assert await admin.version() == "1.1.20"  # on a new connection
    assert len(net.transports[server]) == 2
    assert net.transports[server][0].data == b"status\r\nworkers\r\n"
    assert net.transports[server][1].closing
