"""Takeover: a killed member's background jobs are run by the others, none lost."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

import pytest

from tests.cluster.conftest import (
    LEASE,
    Cluster,
    Runs,
    admin,
    ports_alive,
    queued,
    submit,
    wait_for,
    worker,
)
from tests.procs import Gearshift

pytestmark = [pytest.mark.postgres]

FUNCTION = b"cl"


async def _submit_all(cluster: Cluster, uniques: list[bytes], acked: set[bytes]) -> None:
    """Spread ``uniques`` over the live servers; resend what a dying server left unacked."""
    todo = uniques
    for _ in range(5):
        ports = list(ports_alive(cluster.servers))
        parts: list[list[bytes]] = [todo[i :: len(ports)] for i in range(len(ports))]
        left = await asyncio.gather(
            *(submit(port, FUNCTION, part, acked) for port, part in zip(ports, parts, strict=True))
        )
        todo = list(itertools.chain.from_iterable(left))
        if not todo:
            return
    raise AssertionError(f"{len(todo)} jobs were never acknowledged")


async def _until(cond: Callable[[], bool], limit: float, what: str) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > limit:
            raise AssertionError(f"timed out after {limit}s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_kill_one_of_three_mid_run_loses_nothing(cluster: Cluster) -> None:
    servers = cluster.start(3)
    victim = servers[0]
    runs = Runs()
    stop = asyncio.Event()
    workers = [
        asyncio.create_task(worker(srv.port, FUNCTION, runs, stop))
        for srv in servers
        for _ in range(3)
    ]
    uniques = [b"j%d" % i for i in range(20_000)]
    acked: set[bytes] = set()
    submitting = asyncio.create_task(_submit_all(cluster, uniques, acked))
    await _until(lambda: runs.total >= 4000, 60, "4000 jobs to run")
    victim.kill()
    killed_at = time.monotonic()
    await submitting
    await _until(
        lambda: all(u in runs.count for u in acked), LEASE + 40, "every acknowledged job to run"
    )
    last = max(runs.done_at[u] for u in acked)
    stop.set()
    await asyncio.gather(*workers)
    lost = [u for u in acked if u not in runs.count]
    survivors = list(ports_alive(cluster.servers))
    taken = sum(int(line.split()[2]) for line in _took_over_lines(servers[1:]))
    print(
        f"\nkill one of three: acknowledged {len(acked)}, ran {runs.total},"
        f" lost {len(lost)}, duplicates {runs.duplicates()},"
        f" all done {last - killed_at:.2f}s after the kill (lease {LEASE}s),"
        f" taken over {taken}"
    )
    assert len(acked) == 20_000
    assert not lost
    assert last - killed_at <= LEASE + 10, f"finished {last - killed_at:.1f}s after the kill"
    # Nothing is left in the store or queued on the survivors.
    for port in survivors:
        assert queued(port, "cl") == 0
        assert admin(port, "show stored jobs 10") == []


def _took_over_lines(servers: list[Gearshift]) -> list[str]:
    lines = []
    for srv in servers:
        for line in srv.log_text().splitlines():
            if "took over" in line:
                lines.append(line[line.index("took over") :])
    return lines


async def _drain(ports: list[int], runs: Runs, until: Callable[[], bool], limit: float) -> float:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(worker(p, FUNCTION, runs, stop)) for p in ports for _ in range(2)]
    try:
        return await _until(until, limit, "the workers to run every job")
    finally:
        stop.set()
        await asyncio.gather(*tasks)


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_kill_the_taker_too_the_last_one_finishes_everything(cluster: Cluster) -> None:
    a, b, c = cluster.start(3)
    uniques = [b"k%d" % i for i in range(3000)]
    acked: set[bytes] = set()
    for srv, part in zip((a, b, c), (uniques[0::3], uniques[1::3], uniques[2::3]), strict=True):
        assert await submit(srv.port, FUNCTION, part, acked) == []
    assert cluster.jobs_by_port(c.port) == {a.port: 1000, b.port: 1000, c.port: 1000}
    a.kill()
    took = wait_for(
        lambda: cluster.jobs_by_port(c.port)[a.port] == 0, LEASE + 10, "a's jobs to be taken"
    )
    by_port = cluster.jobs_by_port(c.port)
    assert by_port[b.port] + by_port[c.port] == 3000
    # Kill whichever took more of a's jobs; the other one must end up with everything.
    taker, last = (b, c) if by_port[b.port] >= by_port[c.port] else (c, b)
    taker.kill()
    took2 = wait_for(
        lambda: cluster.jobs_by_port(last.port).get(last.port) == 3000,
        LEASE + 10,
        "the last server to hold every job",
    )
    assert queued(last.port, "cl") == 3000
    runs = Runs()
    await _drain([last.port], runs, lambda: len(runs.count) >= 3000, 30)
    await asyncio.sleep(0.3)
    print(
        f"\nkill the taker too: first takeover {took:.2f}s, second {took2:.2f}s"
        f" (lease {LEASE}s), ran {runs.total}, duplicates {runs.duplicates()}"
    )
    assert set(runs.count) == acked
    assert runs.duplicates() == 0  # nothing was running when the servers died
    wait_for(lambda: admin(last.port, "show stored jobs 5") == [], 10, "the store to empty")


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_restarted_server_rejoins_without_replaying_taken_over_jobs(
    cluster: Cluster,
) -> None:
    a, b = cluster.start(2)
    uniques = [b"r%d" % i for i in range(1000)]
    acked: set[bytes] = set()
    assert await submit(a.port, FUNCTION, uniques, acked) == []
    epoch = int(cluster.members(b.port)[_node(cluster, b.port, a.port)][0])
    a.kill()
    wait_for(lambda: queued(b.port, "cl") == 1000, LEASE + 10, "b to take over a's jobs")
    a.start()  # same port, so the same node name
    members = cluster.members(a.port)
    node_a = _node(cluster, a.port, a.port)
    assert members[node_a][1] == "self"
    assert int(members[node_a][0]) == epoch + 1
    assert queued(a.port, "cl") == 0
    assert cluster.jobs_by_port(a.port) == {a.port: 0, b.port: 1000}
    runs = Runs()
    await _drain([a.port, b.port], runs, lambda: len(runs.count) >= 1000, 30)
    await asyncio.sleep(0.3)
    assert set(runs.count) == acked
    assert runs.duplicates() == 0


@pytest.mark.timeout(60)
async def test_restart_within_the_lease_replays_its_own_jobs(cluster: Cluster) -> None:
    # A long lease: nobody takes over; the restarted server queues its jobs again.
    a, b = cluster.start(2, lease=30, heartbeat=1)
    acked: set[bytes] = set()
    assert await submit(a.port, FUNCTION, [b"w%d" % i for i in range(200)], acked) == []
    a.kill()
    a.start()
    assert queued(a.port, "cl") == 200
    assert queued(b.port, "cl") == 0
    assert cluster.jobs_by_port(b.port) == {a.port: 200, b.port: 0}


@pytest.mark.timeout(60)
async def test_clean_shutdown_hands_jobs_over_at_once(cluster: Cluster) -> None:
    # Lease 30 s: only the leave notification (LISTEN/NOTIFY) explains a quick takeover.
    a, b = cluster.start(2, lease=30, heartbeat=10)
    acked: set[bytes] = set()
    assert await submit(a.port, FUNCTION, [b"s%d" % i for i in range(300)], acked) == []
    a.stop()
    took = wait_for(lambda: queued(b.port, "cl") == 300, 8, "b to take over at once")
    print(f"\nclean shutdown: taken over {took:.2f}s after SIGTERM (lease 30s)")
    members = cluster.members(b.port)
    assert members[_node(cluster, b.port, a.port)][1] == "expired"


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_paused_server_fences_itself_no_job_queued_twice(cluster: Cluster) -> None:
    import signal

    a, b = cluster.start(2)
    acked: set[bytes] = set()
    assert await submit(a.port, FUNCTION, [b"p%d" % i for i in range(500)], acked) == []
    a.signal(signal.SIGSTOP)
    try:
        wait_for(lambda: queued(b.port, "cl") == 500, LEASE + 10, "b to take over")
    finally:
        a.signal(signal.SIGCONT)
    # a notices that its lease ran out, withdraws its queue and rejoins empty-handed.
    wait_for(lambda: queued(a.port, "cl") == 0, 10, "a to withdraw its jobs")
    wait_for(
        lambda: cluster.members(a.port)[_node(cluster, a.port, a.port)][1] == "self",
        10,
        "a to rejoin",
    )
    assert "withdrew 500 queued jobs" in a.log_text()
    runs = Runs()
    await _drain([a.port, b.port], runs, lambda: len(runs.count) >= 500, 30)
    await asyncio.sleep(0.3)
    assert set(runs.count) == acked
    assert runs.duplicates() == 0
    # a can take new jobs again.
    assert await submit(a.port, FUNCTION, [b"after"], acked) == []


def _node(cluster: Cluster, via: int, port: int) -> str:
    for node, row in cluster.members(via).items():
        if row[5].endswith(f":{port}"):
            return node
    raise AssertionError(f"no member listens on {port}")


@pytest.mark.timeout(60)
async def test_foreground_client_sees_connection_lost_when_its_server_dies(
    cluster: Cluster,
) -> None:
    from gearshift import AsyncClient, ConnectionLost

    a, _b = cluster.start(2)
    async with AsyncClient([a.address]) as client:
        job = await client.submit_job("fg", b"x")
        a.kill()
        with pytest.raises(ConnectionLost):
            async with asyncio.timeout(20):
                await job


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_server_cut_off_from_the_database_fences_itself_and_rejoins(
    cluster: Cluster,
) -> None:
    from tests.store.proxy import TcpProxy

    proxy = await TcpProxy(5432).start()
    try:
        args = cluster.args()
        args[1] = args[1].replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        a = await asyncio.to_thread(cluster.factory, *args)
        cluster.servers.append(a)
        (b,) = await asyncio.to_thread(cluster.start, 1)
        acked: set[bytes] = set()
        assert await submit(a.port, FUNCTION, [b"n%d" % i for i in range(300)], acked) == []
        await proxy.cut()
        await _until_async(lambda: queued(b.port, "cl") == 300, LEASE + 10, "b to take over")
        await _until_async(lambda: queued(a.port, "cl") == 0, LEASE + 10, "a to fence itself")
        await proxy.restore()
        node_a = await asyncio.to_thread(_node, cluster, b.port, a.port)
        await _until_async(lambda: cluster.members(b.port)[node_a][1] == "alive", 20, "a to rejoin")
        assert "withdrew 300 queued jobs" in a.log_text()
        runs = Runs()
        await _drain([a.port, b.port], runs, lambda: len(runs.count) >= 300, 30)
        await asyncio.sleep(0.3)
        assert set(runs.count) == acked
        assert runs.duplicates() == 0
        # Back in the cluster, a takes new jobs again.
        await _until_async(lambda: _try_submit(a.port), 20, "a to accept background jobs again")
    finally:
        await proxy.close()


def _try_submit(port: int) -> bool:
    from gearshift.protocol.packets import PacketType
    from tests.store.rawclient import submit_bg_sync

    try:
        submit_bg_sync(port, FUNCTION, b"again", b"", ptype=PacketType.SUBMIT_JOB_BG)
    except (AssertionError, OSError):
        return False  # ERROR QUEUE_ERROR (or no answer yet) while the store reconnects
    return True


async def _until_async(cond: Callable[[], bool], limit: float, what: str) -> float:
    """Like wait_for, but polls from a thread so this loop (the proxy) keeps running."""
    start = time.monotonic()
    while not await asyncio.to_thread(cond):
        if time.monotonic() - start > limit:
            raise AssertionError(f"timed out after {limit}s waiting for {what}")
        await asyncio.sleep(0.1)
    return time.monotonic() - start
