"""gearshift's own client, worker and admin client over TLS, under access rules keyed
by their certificate names (admin_from_loopback off, so identity alone decides)."""

from __future__ import annotations

import pytest

from gearshift import AsyncAdminClient, AsyncClient, AsyncWorker, WorkerJob
from gearshift.errors import GearmanError
from gearshift.server.access import AccessPolicy, FunctionRule
from gearshift.testing import serve
from gearshift.tls import TLSFiles
from tests.ops.conftest import Certs


def files(certs: Certs, name: str) -> TLSFiles:
    cert, key = certs.client(name)
    return TLSFiles(ca=str(certs.ca), cert=str(cert), key=str(key))


async def test_library_over_tls_with_identities(certs: Certs) -> None:
    policy = AccessPolicy(
        enabled=True,
        admin=frozenset({"ops"}),
        admin_from_loopback=False,
        functions=(FunctionRule("vault.*", frozenset({"worker"}), frozenset({"app"})),),
    )
    async with serve(
        **certs.server_options(),
        access=policy,
    ) as srv:

        async def reverse(job: WorkerJob[bytes]) -> bytes:
            return job.data[::-1]

        worker = AsyncWorker(srv.address, tls=files(certs, "worker"), client_id="vault-worker")
        worker.register("vault.rev", reverse)
        import asyncio

        task = asyncio.create_task(worker.run(install_signal_handlers=False))
        try:
            async with AsyncClient(srv.address, tls=files(certs, "app")) as client:
                assert await client.submit("vault.rev", b"secret", timeout=20) == b"terces"
            # The worker's certificate may not submit to vault.* ...
            async with AsyncClient(srv.address, tls=files(certs, "worker")) as client:
                with pytest.raises(GearmanError):
                    await client.submit("vault.rev", b"x", timeout=20)
            # ... and state-changing admin needs the 'ops' identity, even on loopback.
            async with AsyncAdminClient(srv.address, tls=files(certs, "app")) as admin:
                with pytest.raises(GearmanError, match="PERMISSION_DENIED"):
                    await admin.maxqueue("vault.rev", 10)
                rows = await admin.status()
                assert any(r.name == "vault.rev" and r.workers == 1 for r in rows)
            async with AsyncAdminClient(srv.address, tls=files(certs, "ops")) as admin:
                await admin.maxqueue("vault.rev", 10)
                await admin.create_function("vault.new")
            assert srv.scheduler.functions[b"vault.rev"].maxqueue == [10, 10, 10]
            # Peers show their identity to the scheduler (and so to /api/workers).
            identities = {p.identity for p in srv.scheduler.peers}
            assert "worker" in identities
        finally:
            await worker.stop()
            await task
