"""AdminClient / AsyncAdminClient against real servers (gearshift and C++ gearmand)."""

from __future__ import annotations

import os

import pytest

from gearshift import AdminClient, AsyncAdminClient
from gearshift.errors import ClosedError, ConnectError, InvalidCommand, ServerError, UnknownJob
from gearshift.protocol.packets import PacketType
from tests.client.helpers import RawConn
from tests.conftest import ServerFactory


async def test_async_admin_every_command(make_any_server: ServerFactory) -> None:
    srv = make_any_server()
    worker = RawConn(srv.port)
    worker.send(PacketType.SET_CLIENT_ID, b"adm-worker")
    worker.send(PacketType.CAN_DO, b"adm_f")
    client = RawConn(srv.port)
    client.send(PacketType.SUBMIT_JOB_HIGH_BG, b"adm_f", b"u-high", b"x")
    client.send(PacketType.SUBMIT_JOB_BG, b"adm_f", b"u-norm", b"x")
    handle = client.recv().args[0].decode()
    client.recv()
    try:
        async with AsyncAdminClient(srv.address) as admin:
            status = {row.name: row for row in await admin.status()}
            assert status["adm_f"].total == 2
            assert status["adm_f"].workers == 1
            assert status["adm_f"].queued == 2
            prio = {row.name: row for row in await admin.priority_status()}
            assert (prio["adm_f"].high, prio["adm_f"].normal, prio["adm_f"].low) == (1, 1, 0)
            workers = await admin.workers()
            mine = [w for w in workers if w.client_id == "adm-worker"]
            assert len(mine) == 1 and mine[0].functions == ("adm_f",)
            assert mine[0].address == "127.0.0.1"
            jobs = {j.handle: j for j in await admin.show_jobs()}
            assert handle in jobs and jobs[handle].background and not jobs[handle].ignored
            assert {"u-high", "u-norm"} <= set(await admin.show_unique_jobs())
            assert await admin.version()
            assert await admin.getpid() == srv.proc.pid  # type: ignore[union-attr]
            assert await admin.verbose()
            await admin.create_function("adm_created")
            assert "adm_created" in {row.name for row in await admin.status()}
            await admin.drop_function("adm_created")
            assert "adm_created" not in {row.name for row in await admin.status()}
            with pytest.raises(ServerError):
                await admin.drop_function("adm_never_existed")
            await admin.maxqueue("adm_f", 5)
            await admin.maxqueue("adm_f", (1, 2, 3))
            await admin.maxqueue("adm_f")
            await admin.cancel_job(handle)
            with pytest.raises(UnknownJob):
                await admin.cancel_job("H:nowhere:999999")
            assert (await admin.raw("status"))[-1] != "."
            with pytest.raises(InvalidCommand):
                # Unknown command: the typed error comes from the reply text.
                from gearshift.protocol.adminreplies import check_ok

                check_ok(await admin.raw("frobnicate"))
    finally:
        worker.close()
        client.close()


async def test_shutdown_stops_or_is_refused(make_any_server: ServerFactory) -> None:
    srv = make_any_server()
    async with AsyncAdminClient(srv.address) as admin:
        version = await admin.version()
        if srv.kind == "gearmand":
            # gearmand removed shutdown in 1.1.15.
            with pytest.raises(InvalidCommand):
                await admin.shutdown(graceful=True)
            assert await admin.version() == version
        else:
            await admin.shutdown()
            assert srv.proc is not None
            assert srv.proc.wait(20) is not None


def test_blocking_admin(make_any_server: ServerFactory) -> None:
    srv = make_any_server()
    with AdminClient(srv.address) as admin:
        admin.create_function("blk_f")
        assert "blk_f" in {row.name for row in admin.status()}
        assert any(row.name == "blk_f" for row in admin.priority_status())
        assert isinstance(admin.workers(), list)
        assert isinstance(admin.show_jobs(), list)
        assert isinstance(admin.show_unique_jobs(), list)
        assert admin.version() and admin.verbose()
        assert admin.getpid() > 0
        admin.maxqueue("blk_f", 3)
        with pytest.raises(UnknownJob):
            admin.cancel_job("H:x:424242")
        admin.drop_function("blk_f")
        assert admin.raw("status") == admin.command("status")
    with pytest.raises(ClosedError):
        admin.status()


def test_gearman_servers_env_and_unreachable(
    monkeypatch: pytest.MonkeyPatch, make_gearmand: ServerFactory
) -> None:
    srv = make_gearmand()
    monkeypatch.setenv("GEARMAN_SERVERS", f"{srv.address},127.0.0.1:1")
    with AdminClient() as admin:
        assert admin.server.port == srv.port
        assert admin.version()
    with AdminClient("127.0.0.1:1", connect_timeout=5) as admin, pytest.raises(ConnectError):
        admin.version()
    assert os.environ["GEARMAN_SERVERS"].startswith("127.0.0.1")
