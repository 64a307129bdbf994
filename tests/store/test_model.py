"""Random add / done / restart sequences against a model of the queue (SQLite)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gearshift.protocol.packets import Priority
from gearshift.store import Store, StoredJob, open_store

# An operation: ("add", n jobs, unique) | ("done", index into the live jobs) | ("restart",)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 20), st.sampled_from([b"", b"same", b"x"])),
        st.tuples(st.just("done"), st.integers(0, 200)),
        st.tuples(st.just("restart")),
    ),
    max_size=25,
)


async def run(path: Path, program: list[tuple[object, ...]]) -> None:
    url = f"sqlite:///{path}?synchronous=normal"
    store: Store = open_store(url)
    await store.open()
    live: list[StoredJob] = []  # the model: jobs in insertion order
    serial = 0
    try:
        for op in program:
            if op[0] == "add":
                n, unique = op[1], op[2]
                assert isinstance(n, int) and isinstance(unique, bytes)
                batch = []
                for _ in range(n):
                    serial += 1
                    batch.append(
                        StoredJob(b"fn", unique, b"%d" % serial, Priority(serial % 3), serial)
                    )
                # Concurrent adds, and concurrent dones of the oldest job, in one go.
                victims = live[:1]
                await asyncio.gather(
                    *(store.add(j) for j in batch), *(store.done(j) for j in victims)
                )
                live = live[len(victims) :] + batch
            elif op[0] == "done" and live:
                i = op[1]
                assert isinstance(i, int)
                await store.done(live.pop(i % len(live)))
            elif op[0] == "restart":
                await store.close()
                store = open_store(url)
                await store.open()
                replayed = [j async for j in store.replay()]
                assert [(j.data, j.unique, j.priority, j.when) for j in replayed] == [
                    (j.data, j.unique, j.priority, j.when) for j in live
                ]
                live = replayed
    finally:
        await store.close()
    check: Store = open_store(url)
    await check.open()
    try:
        assert [j.data async for j in check.replay()] == [j.data for j in live]
    finally:
        await check.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=ops)
def test_store_matches_model(program: list[tuple[object, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp) / "q.db", program))
