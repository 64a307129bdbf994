"""Admin views of the store and the cluster; ``list_jobs`` on every store."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from gearshift import AdminClient, AsyncAdminClient, ServerError
from gearshift.errors import ConfigError, StoreError
from gearshift.protocol.packets import PacketType as T
from gearshift.store import ClusterSettings, StoredJob, open_store
from tests.cluster.conftest import PG_DSN, Cluster, admin
from tests.procs import Gearshift
from tests.store.rawclient import submit_bg_sync


@pytest.mark.postgres
async def test_cluster_command_lists_members_leases_and_jobs(cluster: Cluster) -> None:
    a, b = cluster.start(2)
    for i in range(3):
        submit_bg_sync(a.port, b"f", b"u%d" % i, b"data", ptype=T.SUBMIT_JOB_BG)
    async with AsyncAdminClient(a.address) as adm:
        members = await adm.cluster()
        store = await adm.show_store()
        stored = await adm.show_stored_jobs(2)
    assert {m.address.rsplit(":", 1)[1] for m in members} == {str(a.port), str(b.port)}
    by_port = {int(m.address.rsplit(":", 1)[1]): m for m in members}
    assert by_port[a.port].state == "self" and by_port[b.port].state == "alive"
    assert by_port[a.port].jobs == 3 and by_port[b.port].jobs == 0
    assert all(m.alive and m.epoch == 1 and 0 <= m.lease_age < 3 for m in members)
    assert all(0 < m.lease_remaining <= 3 for m in members)
    assert store.kind == "postgres" and store.persistent and store.cluster == cluster.name
    assert cluster.table in store.description and "@" not in store.description
    assert [(s.function, s.unique, s.priority, s.size) for s in stored] == [
        ("f", "u0", 1, 4),
        ("f", "u1", 1, 4),
    ]
    with AdminClient(b.address) as sync_adm:
        assert len(sync_adm.show_stored_jobs()) == 3
        assert {m.jobs for m in sync_adm.cluster()} == {0, 3}
    assert "cluster" in a.log_text() and "joined" in a.log_text()


def test_store_views_on_a_sqlite_server(
    make_gearshift: Callable[..., Gearshift], tmp_path: Path
) -> None:
    db = tmp_path / "q.db"
    srv = make_gearshift("--queue", f"sqlite:///{db}", "--verbose", "INFO")
    submit_bg_sync(srv.port, b"g", b"", b"abc", ptype=T.SUBMIT_JOB_LOW_BG)
    submit_bg_sync(srv.port, b"g", b"x", b"", ptype=T.SUBMIT_JOB_EPOCH, epoch=4102444800)
    rows = admin(srv.port, "show stored jobs")
    assert [r[1:] for r in rows] == [["g", "", "2", "0", "3"], ["g", "x", "1", "4102444800", "0"]]
    assert admin(srv.port, "show stored jobs 1") == rows[:1]
    store = admin(srv.port, "show store")
    assert (
        store[0][0] == "sqlite" and str(db) in store[0][1] and store[0][2:] == ["persistent", "-"]
    )
    with AdminClient(srv.address) as adm:
        with pytest.raises(ServerError, match="not clustered"):
            adm.cluster()
        assert adm.raw("show stored jobs x")[0].startswith("ERR")
        assert adm.show_stored_jobs(0) == []
        # The listing waits its turn: a pipelined admin command still answers in order.
        assert adm.version()
    assert "queue store: sqlite" in srv.log_text()


def test_store_views_on_a_memory_server(make_gearshift: Callable[..., Gearshift]) -> None:
    srv = make_gearshift()
    submit_bg_sync(srv.port, b"g", b"", b"abc", ptype=T.SUBMIT_JOB_BG)
    assert admin(srv.port, "show stored jobs") == []
    assert admin(srv.port, "show store") == [["memory", "memory", "memory", "-"]]


EVERY_STORE = pytest.mark.parametrize(
    "kind",
    [
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
        pytest.param("redis", id="redis", marks=pytest.mark.redis),
        pytest.param("mysql", id="mysql", marks=pytest.mark.mysql),
    ],
)


@EVERY_STORE
async def test_list_jobs_on_every_store(kind: str, tmp_path: Path) -> None:
    name = "lj_" + uuid.uuid4().hex[:8]
    store = open_store(_url(kind, name, tmp_path))
    await store.open()
    try:
        jobs = [StoredJob(b"f", b"u%d" % i, b"d" * i) for i in range(5)]
        for job in jobs:
            await store.add(job)
        listed = await store.list_jobs(3)
        assert len(listed) == 3
        assert {j.unique for j in await store.list_jobs(100)} == {j.unique for j in jobs}
        assert await store.list_jobs(0) == []
        for job in jobs:
            await store.done(job)
        assert await store.list_jobs(10) == []
    finally:
        await store.close()
        await _drop(kind, name)


@EVERY_STORE
async def test_a_long_listing_lets_submits_through(kind: str, tmp_path: Path) -> None:
    # `show stored jobs 100000` reads chunk by chunk; a durable submit made meanwhile
    # commits between two chunks instead of waiting for the whole listing.
    name = "lj_" + uuid.uuid4().hex[:8]
    store = open_store(_url(kind, name, tmp_path))
    await store.open()
    try:
        await asyncio.gather(*(store.add(StoredJob(b"f", b"u%d" % i, b"d")) for i in range(2500)))
        finished: list[str] = []
        listing = asyncio.create_task(store.list_jobs(100_000))
        listing.add_done_callback(lambda _: finished.append("list"))
        await asyncio.sleep(0)  # the listing has taken the connection for its first chunk
        await store.add(StoredJob(b"f", b"late", b"d"))
        finished.append("add")
        listed = await listing
        assert finished == ["add", "list"]
        assert 2500 <= len(listed) <= 2501
        assert len({j.unique for j in listed}) == len(listed)  # no row listed twice
        # Closing during a listing: the listing stops with a clear error, close finishes.
        listing = asyncio.create_task(store.list_jobs(100_000))
        await asyncio.sleep(0)
        await store.close()
        with pytest.raises(StoreError, match="closed during the listing"):
            await listing
    finally:
        await store.close()
        await _drop(kind, name)


def _url(kind: str, name: str, tmp_path: Path) -> str:
    return {
        "sqlite": f"sqlite:///{tmp_path}/q.db",
        "postgres": f"{PG_DSN}?table={name}",
        "redis": f"redis://127.0.0.1:6379/0?prefix={name}",
        "mysql": f"mysql://root@127.0.0.1:3306/test?table={name}",
    }[kind]


async def _drop(kind: str, name: str) -> None:
    if kind == "postgres":
        import asyncpg

        conn = await asyncpg.connect(PG_DSN)
        await conn.execute(f"DROP TABLE IF EXISTS {name}")
        await conn.close()
    elif kind == "mysql":
        import asyncmy

        conn = await asyncmy.connect(host="127.0.0.1", user="root", database="test")
        async with conn.cursor() as cur:
            await cur.execute(f"DROP TABLE IF EXISTS {name}")
        conn.close()


def test_cluster_settings_from_url_and_flags() -> None:
    store = open_store(f"{PG_DSN}?table=t&cluster=c1&lease=6&heartbeat=1.5&node=n1")
    assert store.cluster == ClusterSettings("c1", "n1", 6.0, 1.5)  # type: ignore[attr-defined]
    assert "sslmode" not in store.dsn  # type: ignore[attr-defined]
    store = open_store(
        PG_DSN, {"cluster-name": "c2", "cluster-lease": "3", "cluster-heartbeat": "0.5"}
    )
    assert store.cluster == ClusterSettings("c2", "", 3.0, 0.5)  # type: ignore[attr-defined]
    # The default heartbeat is a third of the lease, at most 2 s.
    assert open_store(f"{PG_DSN}?cluster=c&lease=3").cluster.heartbeat == 1.0  # type: ignore[attr-defined]
    assert open_store(PG_DSN).cluster is None  # type: ignore[attr-defined]
    libpq = open_store("Postgres", {"libpq-conninfo": "host=127.0.0.1", "cluster-name": "c3"})
    assert libpq.cluster.name == "c3"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        (f"{PG_DSN}?cluster=c&lease=2&heartbeat=2", {}, "shorter than the lease"),
        (f"{PG_DSN}?cluster=c&lease=x", {}, "must be a number"),
        (PG_DSN, {"cluster-lease": "5"}, "need a cluster name"),
        (f"{PG_DSN}?cluster=c&heartbeat=0", {}, "must be positive"),
    ],
)
def test_bad_cluster_settings(url: str, options: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_store(url, options)


def test_server_refuses_bad_cluster_flags(make_gearshift: Callable[..., Gearshift]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gearshift", "server", "-p", "0", "--queue", PG_DSN]
        + ["--cluster-name", "c", "--cluster-lease", "1", "--cluster-heartbeat", "5"],
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode != 0
    assert b"shorter than the lease" in proc.stderr


@pytest.mark.postgres
@pytest.mark.slow
async def test_http_api_shows_store_cluster_and_stored_jobs(cluster: Cluster) -> None:
    import aiohttp

    from tests.procs import free_port, wait_listening

    http = free_port()
    a = cluster.factory(*cluster.args(), "--http-port", str(http))
    cluster.servers.append(a)
    assert a.proc is not None
    wait_listening(http, a.proc)
    (b,) = cluster.start(1)
    submit_bg_sync(b.port, b"h", b"hu", b"12345", ptype=T.SUBMIT_JOB_HIGH_BG)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{http}") as session:
        async with session.get("/api/store") as resp:
            store = await resp.json()
        async with session.get("/api/store/jobs?limit=10") as resp:
            jobs = await resp.json()
        async with session.get("/api/cluster") as resp:
            view = await resp.json()
    assert store["kind"] == "postgres" and store["cluster"] == cluster.name
    assert store["persistent"] and not store["down"]
    assert [(j["function"], j["unique"], j["priority"], j["size"]) for j in jobs] == [
        ("h", "hu", 0, 5)
    ]
    assert view["cluster"] == cluster.name and view["epoch"] == 1 and not view["fenced"]
    members = {m["address"].rsplit(":", 1)[1]: m for m in view["members"]}
    assert members[str(b.port)]["jobs"] == 1 and members[str(a.port)]["jobs"] == 0
    assert all(m["alive"] and m["lease_remaining"] > 0 for m in members.values())


async def test_http_api_cluster_is_404_without_a_cluster(
    make_gearshift: Callable[..., Gearshift],
) -> None:
    import aiohttp

    from tests.procs import free_port, wait_listening

    http = free_port()
    srv = make_gearshift("--http-port", str(http))
    assert srv.proc is not None
    wait_listening(http, srv.proc)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{http}") as session:
        async with session.get("/api/cluster") as resp:
            assert resp.status == 404
        async with session.get("/api/store") as resp:
            assert (await resp.json())["kind"] == "memory"
        async with session.get("/api/store/jobs") as resp:
            assert await resp.json() == []


def _admin_cli(port: int, *flags: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "gearshift", "admin", "-h", "127.0.0.1", "-p", str(port), *flags],
        capture_output=True,
        timeout=30,
    )


def test_admin_cli_lists_stored_jobs_and_the_store(
    make_gearshift: Callable[..., Gearshift], tmp_path: Path
) -> None:
    srv = make_gearshift("--queue", f"sqlite:///{tmp_path}/q.db")
    for i in range(3):
        submit_bg_sync(srv.port, b"g", b"u%d" % i, b"xy", ptype=T.SUBMIT_JOB_BG)
    proc = _admin_cli(srv.port, "--show-store", "--show-stored-jobs", "2")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.decode().splitlines()
    assert lines[0].startswith("sqlite\t") and lines[1] == "."
    assert [line.split("\t")[1:] for line in lines[2:4]] == [
        ["g", "u0", "1", "0", "2"],
        ["g", "u1", "1", "0", "2"],
    ]
    assert lines[4:] == ["."]
    proc = _admin_cli(srv.port, "--json", "--show-stored-jobs")
    doc = json.loads(proc.stdout)
    assert [row["unique"] for row in doc["show_stored_jobs"]] == ["u0", "u1", "u2"]
    proc = _admin_cli(srv.port, "--cluster")
    assert proc.returncode == 1 and b"NO_CLUSTER" in proc.stderr


@pytest.mark.postgres
async def test_admin_cli_shows_the_cluster(cluster: Cluster) -> None:
    (a,) = cluster.start(1)
    proc = await asyncio.to_thread(_admin_cli, a.port, "--json", "--cluster")
    assert proc.returncode == 0, proc.stderr
    (member,) = json.loads(proc.stdout)["cluster"]
    assert member["state"] == "self" and member["address"].endswith(f":{a.port}")


@pytest.mark.postgres
async def test_cluster_settings_from_a_toml_config_file(cluster: Cluster, tmp_path: Path) -> None:
    conf = tmp_path / "gearshift.toml"
    conf.write_text(
        f'cluster-name = "{cluster.name}"\n'
        "cluster_lease = 4\n"
        'cluster-heartbeat = "0.5"\n'
        'cluster-node = "toml-node"\n'
    )
    queue = f"{PG_DSN}?table={cluster.table}"
    srv = await asyncio.to_thread(cluster.factory, "--queue", queue, "--config", str(conf))
    cluster.servers.append(srv)
    members = await asyncio.to_thread(cluster.members, srv.port)
    assert list(members) == ["toml-node"] and members["toml-node"][1] == "self"
    assert 0 < float(members["toml-node"][3]) <= 4
