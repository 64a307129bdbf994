"""MultiAdmin / AsyncMultiAdmin: one command fanned out to gearshift, gearmand and a dead port."""

from __future__ import annotations

import pytest

import gearshift
from gearshift import AsyncMultiAdmin, FunctionStatus, MultiAdmin, PriorityStatus, ServerAddress
from gearshift.errors import ConnectError, UnknownJob
from gearshift.protocol.packets import PacketType
from tests.client.helpers import RawConn
from tests.conftest import ServerFactory
from tests.procs import ServerProcess, free_port


def queue(srv: ServerProcess, function: bytes, n: int, *, high: bool = False) -> list[str]:
    """Queue ``n`` background jobs of ``function``; their handles."""
    conn = RawConn(srv.port)
    ptype = PacketType.SUBMIT_JOB_HIGH_BG if high else PacketType.SUBMIT_JOB_BG
    for i in range(n):
        conn.send(ptype, function, b"%s-%d" % (function, i), b"x")
    handles = [conn.recv().args[0].decode() for _ in range(n)]
    conn.close()
    return handles


@pytest.fixture
def two(make_gearshift: ServerFactory, make_gearmand: ServerFactory) -> tuple[str, str, str]:
    """Addresses of a gearshift, a gearmand (each with jobs queued) and a closed port."""
    gs, gm = make_gearshift(), make_gearmand()
    queue(gs, b"both", 2)
    queue(gm, b"both", 3, high=True)
    queue(gm, b"only_gm", 1)
    return gs.address, gm.address, f"127.0.0.1:{free_port()}"


async def test_fan_out_answers_per_server_and_errors_apart(two: tuple[str, str, str]) -> None:
    gs, gm, dead = two
    async with AsyncMultiAdmin([gs, gm, dead], connect_timeout=5) as admin:
        assert admin.servers == [ServerAddress.parse(a) for a in (gs, gm, dead)]
        status = await admin.status()
        assert list(status) == admin.servers  # in the order given
        assert isinstance(status[ServerAddress.parse(dead)], ConnectError)
        assert admin.errors(status).keys() == {ServerAddress.parse(dead)}
        gs_rows = status[ServerAddress.parse(gs)]
        gm_rows = status[ServerAddress.parse(gm)]
        assert not isinstance(gs_rows, Exception) and not isinstance(gm_rows, Exception)
        assert {r.name: r.total for r in gs_rows} == {"both": 2}
        assert {r.name: r.total for r in gm_rows} == {"both": 3, "only_gm": 1}
        versions = await admin.version()
        assert versions[ServerAddress.parse(gs)] == gearshift.__version__
        assert str(versions[ServerAddress.parse(gm)]).startswith("1.1.")
        pids = await admin.getpid()
        assert isinstance(pids[ServerAddress.parse(gs)], int)
        # Sums over the servers that answered; the dead one is left out.
        assert await admin.total_status() == [
            FunctionStatus("both", 5, 0, 0),
            FunctionStatus("only_gm", 1, 0, 0),
        ]
        assert await admin.total_priority_status() == [
            PriorityStatus("both", 3, 2, 0, 0),
            PriorityStatus("only_gm", 0, 1, 0, 0),
        ]


async def test_cancel_job_reaches_the_server_that_holds_it(
    make_gearshift: ServerFactory,
) -> None:
    a, b = make_gearshift(), make_gearshift()
    (handle,) = queue(a, b"cancel_me", 1)
    async with AsyncMultiAdmin([a.address, b.address]) as admin:
        answers = await admin.cancel_job(handle)
        assert answers[ServerAddress.parse(a.address)] is None
        assert isinstance(answers[ServerAddress.parse(b.address)], UnknownJob)


def test_blocking_multiadmin(two: tuple[str, str, str]) -> None:
    gs, gm, dead = two
    with MultiAdmin(f"{gs},{gm}") as admin:
        assert [r.name for r in admin.total_status()] == ["both", "only_gm"]
        lines = admin.command("status")
        assert all(isinstance(v, list) for v in lines.values())
        assert admin.maxqueue("both", 7) == {s: None for s in admin.servers}
    with MultiAdmin([dead], connect_timeout=5) as nobody:
        with pytest.raises(ConnectError):
            nobody.total_status()
