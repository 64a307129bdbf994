"""Background submits per second with each durable queue, gearshift next to gearmand.

Each case starts a fresh server process (``gearshift bench``'s ManagedServer, so its
memory is read from /proc), queues ``--jobs`` background jobs with 100-byte payloads
from ``--clients`` raw-protocol connections (no worker, so every job stays queued and
stored), then stops the server and drops the table / keys it wrote.  Printed per
case: submits/s, memory per queued job (RSS growth / jobs) and the server's CPU per
job.  Not part of the test suite; run it by hand::

    .venv/bin/python benchmarks/store_bench.py                 # every case
    .venv/bin/python benchmarks/store_bench.py --only sqlite --jobs 50000
    .venv/bin/python benchmarks/store_bench.py --json > figures.json

Needs PostgreSQL (127.0.0.1:5432, db test), MariaDB (127.0.0.1:3306, root, db test)
and Redis (127.0.0.1:6379) for the database cases; a case whose database is missing
is reported as failed and the others still run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gearshift.bench import BenchConfig, ManagedServer, run_bench

GEARMAND = "/usr/sbin/gearmand -p {port} -L 127.0.0.1 --threads=0 -l none -P {rundir}/g.pid"
GEARSHIFT = f"{sys.executable} -m gearshift server -p {{port}} -L 127.0.0.1 -l none"
PG = "postgresql://postgres@127.0.0.1:5432/test"
MYSQL = "mysql://root@127.0.0.1:3306/test"
REDIS = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class Case:
    """One server + queue combination."""

    name: str
    server: str
    queue: str
    #: Builds the command line from a per-run table / key-prefix name.
    command: Callable[[str], str]
    #: What to drop afterwards: ("postgres" | "mysql" | "redis" | "", name).
    backend: str = ""


CASES = [
    Case("gearshift memory", "gearshift", "memory", lambda t: f"{GEARSHIFT} -q builtin"),
    Case(
        "gearshift sqlite (default, synchronous=full)",
        "gearshift",
        "sqlite",
        lambda t: f"{GEARSHIFT} --queue sqlite:///{{rundir}}/q.db",
    ),
    Case(
        "gearshift sqlite synchronous=normal",
        "gearshift",
        "sqlite-normal",
        lambda t: f"{GEARSHIFT} --queue sqlite:///{{rundir}}/q.db?synchronous=normal",
    ),
    Case(
        "gearshift postgres",
        "gearshift",
        "postgres",
        lambda t: f"{GEARSHIFT} --queue {PG}?table={t}",
        "postgres",
    ),
    Case(
        "gearshift redis",
        "gearshift",
        "redis",
        lambda t: f"{GEARSHIFT} --queue {REDIS}?prefix={t}",
        "redis",
    ),
    Case(
        "gearshift mysql",
        "gearshift",
        "mysql",
        lambda t: f"{GEARSHIFT} --queue {MYSQL}?table={t}",
        "mysql",
    ),
    Case("gearmand builtin", "gearmand", "memory", lambda t: f"{GEARMAND} -q builtin"),
    Case(
        "gearmand libsqlite3",
        "gearmand",
        "sqlite",
        lambda t: f"{GEARMAND} -q libsqlite3 --libsqlite3-db {{rundir}}/q.db",
    ),
    Case(
        "gearmand Postgres",
        "gearmand",
        "postgres",
        lambda t: (
            f"{GEARMAND} -q Postgres --libpq-conninfo"
            f" 'host=127.0.0.1 dbname=test user=postgres' --libpq-table {t}"
        ),
        "postgres",
    ),
    Case(
        "gearmand redis",
        "gearmand",
        "redis",
        lambda t: (
            f"{GEARMAND} -q redis --redis-server 127.0.0.1 --redis-port 6379 --redis-prefix {t}"
        ),
        "redis",
    ),
    Case(
        "gearmand MySQL",
        "gearmand",
        "mysql",
        lambda t: (
            f"{GEARMAND} -q MySQL --mysql-host 127.0.0.1 --mysql-user root"
            f" --mysql-db test --mysql-table {t}"
        ),
        "mysql",
    ),
]


async def drop(backend: str, name: str) -> None:
    """Remove what a case wrote to a database server."""
    if backend == "postgres":
        import asyncpg

        conn = await asyncpg.connect(PG)
        try:
            await conn.execute(f"DROP TABLE IF EXISTS {name}")
        finally:
            await conn.close()
    elif backend == "mysql":
        import asyncmy

        conn = await asyncmy.connect(host="127.0.0.1", port=3306, user="root", database="test")
        try:
            async with conn.cursor() as cur:
                await cur.execute(f"DROP TABLE IF EXISTS {name}")
        finally:
            conn.close()
    elif backend == "redis":
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(REDIS)
        try:
            keys = [k async for k in client.scan_iter(match=f"{name}*", count=10000)]
            for i in range(0, len(keys), 10000):
                await client.delete(*keys[i : i + 10000])
        finally:
            await client.aclose()


def run_case(case: Case, args: argparse.Namespace) -> dict[str, Any]:
    name = f"bench_{uuid.uuid4().hex[:10]}"
    row: dict[str, Any] = {"case": case.name, "server": case.server, "queue": case.queue}
    server = ManagedServer(case.command(name))
    try:
        server.start()
        cfg = BenchConfig(
            mode="bg",
            port=server.port,
            jobs=args.jobs,
            clients=args.clients,
            pipeline=args.pipeline,
            size=100,
            duration=args.timeout,
            timeout=args.timeout,
            unique=True,  # gearmand's sqlite/MySQL queues would collide on empty uniques
        )
        result = run_bench(cfg, server=server)
        row.update(
            jobs=result.jobs,
            seconds=round(result.seconds, 2),
            submits_per_s=round(result.jobs_per_s),
            bytes_per_queued_job=result.rss_per_job_bytes,
            server_us_per_job=result.server_us_per_job,
            errors=result.errors,
            error_text=result.error_text,
        )
    except Exception as exc:
        row["failed"] = f"{type(exc).__name__}: {exc}"
    finally:
        server.stop()
        if case.backend:
            try:
                asyncio.run(drop(case.backend, name))
            except Exception as exc:
                row["cleanup_failed"] = str(exc)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", "--jobs", type=int, default=20000, help="background jobs per case")
    p.add_argument("-c", "--clients", type=int, default=16, help="submitting connections")
    p.add_argument("--pipeline", type=int, default=8, help="submits in flight per connection")
    p.add_argument("--timeout", type=float, default=600.0, help="cap per case, seconds")
    p.add_argument("--only", help="comma-separated substrings of case names to run")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    args = p.parse_args(argv)
    wanted = [w.strip() for w in args.only.split(",")] if args.only else None
    cases = [c for c in CASES if not wanted or any(w in c.name for w in wanted)]
    rows = []
    if not args.json:
        print(
            f"{args.jobs} background jobs, 100-byte payloads, {args.clients} clients x "
            f"pipeline {args.pipeline}"
        )
        print(f"{'case':<46} {'submits/s':>10} {'B/queued job':>13} {'srv us/job':>11}")
    for case in cases:
        row = run_case(case, args)
        rows.append(row)
        if args.json:
            print(json.dumps(row), flush=True)
        elif "failed" in row:
            print(f"{case.name:<46} FAILED: {row['failed'][:200]}", flush=True)
        else:
            bpj = row["bytes_per_queued_job"]
            us = row["server_us_per_job"]
            print(
                f"{case.name:<46} {row['submits_per_s']:>10} "
                f"{(f'{bpj:.0f}' if bpj is not None else '-'):>13} "
                f"{(f'{us:.0f}' if us is not None else '-'):>11}"
                + (f"  errors={row['errors']}" if row["errors"] else ""),
                flush=True,
            )
    return 0 if all("failed" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
