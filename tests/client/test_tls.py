"""TLS from the client, worker and admin client to gearshift's --ssl port."""

from __future__ import annotations

import pytest

from gearshift import AsyncAdminClient, AsyncClient, WorkerJob
from gearshift.errors import ConnectError, ServerUnavailable
from gearshift.tls import TLSFiles
from tests.client.conftest import make_worker, running
from tests.conftest import ServerFactory
from tests.ops.conftest import Certs, certs  # noqa: F401 - the session fixture


async def test_client_worker_admin_over_tls(make_gearshift: ServerFactory, certs: Certs) -> None:  # noqa: F811
    srv = make_gearshift(*certs.server_flags())
    cert, key = certs.client("app")
    tls = TLSFiles(ca=str(certs.ca), cert=str(cert), key=str(key))

    async def reverse(job: WorkerJob[bytes]) -> bytes:
        return job.data[::-1]

    worker = make_worker(srv.address, {"reverse": reverse}, tls=tls, client_id="tls-worker")
    async with running(worker), AsyncClient(srv.address, tls=tls) as client:
        assert await client.submit("reverse", b"secret", timeout=20) == b"terces"
        async with AsyncAdminClient(srv.address, tls=tls) as admin:
            assert any(w.client_id == "tls-worker" for w in await admin.workers())
    # Without a client certificate the server refuses the handshake.
    async with AsyncClient(srv.address, tls=str(certs.ca), connect_timeout=10) as client:
        with pytest.raises((ServerUnavailable, ConnectError)):
            await client.submit_background("reverse", b"x")
    # A CA that did not sign the server's certificate: we refuse the server.
    rogue = TLSFiles(ca=str(certs.rogue_ca), cert=str(cert), key=str(key))
    async with AsyncAdminClient(srv.address, tls=rogue) as admin:
        with pytest.raises(ConnectError, match="TLS handshake"):
            await admin.version()
