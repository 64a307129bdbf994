"""A short seeded fuzzing campaign on every ``make test`` (``make fuzz`` runs minutes)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hostile.fuzz import campaign
from tests.procs import Gearshift


@pytest.fixture(params=["builtin", "sqlite"])
def server(request: pytest.FixtureRequest) -> Iterator[Gearshift]:
    srv = Gearshift()
    queue = "builtin" if request.param == "builtin" else f"sqlite:///{srv.dir}/q.db"
    srv.extra_args = ["--queue", queue]
    srv.start()
    try:
        yield srv
    finally:
        srv.close()


@pytest.mark.parametrize("seed", [1, 2])
async def test_fuzz_batches_leave_the_server_healthy(server: Gearshift, seed: int) -> None:
    assert server.proc is not None
    report = await campaign(
        server.port, server.proc.pid, server.log, seed=seed, batches=10, connections=8, messages=500
    )
    assert report.batches == 10
    assert report.slowest_health < 1.0
