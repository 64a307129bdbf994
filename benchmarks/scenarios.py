"""The scenario set of shared/bench (a-f) plus a 100 MiB round trip, run with ``gearshift bench``.

Every scenario gets a freshly started server, so peak RSS and CPU belong to it.  A
scenario returns a flat dict of figures; ``benchmarks.run`` runs each one against
every server, takes medians over repeats and prints the ratio gearshift / gearmand.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from gearshift.bench import BenchConfig, BenchResult, ManagedServer, run_bench

GEARMAND_CMD = (
    "/usr/sbin/gearmand -p {port} -L 127.0.0.1 --threads=0 -l none -P {rundir}/gearmand.pid"
)
GEARSHIFT_CMD = f"{sys.executable} -m gearshift server -p {{port}} -L 127.0.0.1 -q builtin -l none"
#: The same flags for both: gearshift accepts gearmand's queue options.
GEARMAND_SQLITE_CMD = GEARMAND_CMD + " -q libsqlite3 --libsqlite3-db {rundir}/queue.db"
GEARSHIFT_SQLITE_CMD = (
    f"{sys.executable} -m gearshift server -p {{port}} -L 127.0.0.1 -l none"
    " -q libsqlite3 --libsqlite3-db {rundir}/queue.db"
)

SERVERS: dict[str, str] = {"gearmand": GEARMAND_CMD, "gearshift": GEARSHIFT_CMD}
SQLITE_SERVERS: dict[str, str] = {
    "gearmand": GEARMAND_SQLITE_CMD,
    "gearshift": GEARSHIFT_SQLITE_CMD,
}

Figures = dict[str, float | None]


@dataclass(frozen=True)
class Params:
    """Durations and sizes; ``quick()`` is for a smoke run."""

    a_duration: float = 8.0
    a_warmup: int = 500
    b_duration: float = 10.0
    b_warmup: int = 2000
    c_jobs: int = 200_000
    d_duration: float = 8.0
    d_warmup: int = 20
    e_duration: float = 10.0
    e_warmup: int = 2000
    e_idle: int = 1000
    big_size: int = 100 * 1024 * 1024
    sqlite_jobs: int = 5_000

    def quick(self) -> Params:
        return replace(
            self,
            a_duration=2.0,
            b_duration=3.0,
            c_jobs=50_000,
            d_duration=2.0,
            e_duration=3.0,
            e_warmup=500,
            sqlite_jobs=2_000,
        )


@dataclass(frozen=True)
class Scenario:
    """One named load; ``run(server, params)`` returns its figures."""

    key: str
    title: str
    run: Callable[[ManagedServer, Params], tuple[Figures, list[dict[str, Any]]]]
    #: Which server commands it uses (the in-memory queue, or SQLite for both).
    servers: dict[str, str]
    #: The equivalent ``gearshift bench`` command lines, for RESULTS.md.
    commands: tuple[str, ...]


def _fg(server: ManagedServer, **kw: Any) -> BenchResult:
    cfg = BenchConfig(port=server.port, **kw)
    return run_bench(cfg, server=server)


def _fg_figures(r: BenchResult) -> Figures:
    return {
        "jobs_per_s": r.jobs_per_s,
        "p50_us": r.p50_us,
        "p99_us": r.p99_us,
        "srv_us_per_job": r.server_us_per_job,
        "srv_hwm_mib": round((r.server_hwm_kib or 0) / 1024, 1),
        "gen_cpu_s": round(r.client_cpu_s + r.worker_cpu_s + r.idle_cpu_s, 2),
        "busy_pct": r.busy_pct,
        "errors": r.errors,
    }


def run_a(server: ManagedServer, p: Params) -> tuple[Figures, list[dict[str, Any]]]:
    r = _fg(
        server, function="bench_a", clients=1, workers=1, duration=p.a_duration, warmup=p.a_warmup
    )
    return _fg_figures(r), [r.to_dict()]


def run_b(server: ManagedServer, p: Params) -> tuple[Figures, list[dict[str, Any]]]:
    r = _fg(
        server, function="bench_b", clients=16, workers=4, duration=p.b_duration, warmup=p.b_warmup
    )
    return _fg_figures(r), [r.to_dict()]


def run_c(server: ManagedServer, p: Params) -> tuple[Figures, list[dict[str, Any]]]:
    sub = _fg(
        server, mode="bg", function="bench_c", clients=4, jobs=p.c_jobs, duration=300, warmup=0
    )
    drain = _fg(
        server, mode="drain", function="bench_c", workers=4, jobs=sub.jobs, duration=300, warmup=0
    )
    figures: Figures = {
        "submit_jobs_per_s": sub.jobs_per_s,
        "submit_p99_us": sub.p99_us,
        "rss_per_job_B": sub.rss_per_job_bytes,
        "srv_us_per_job_submit": sub.server_us_per_job,
        "submit_first_tenth": sub.rate_tenths[0] if sub.rate_tenths else None,
        "submit_last_tenth": sub.rate_tenths[-1] if sub.rate_tenths else None,
        "drain_jobs_per_s": drain.jobs_per_s,
        "srv_us_per_job_drain": drain.server_us_per_job,
        "rss_after_drain_mib": round((drain.server_rss_after_kib or 0) / 1024, 1),
        "errors": sub.errors + drain.errors,
    }
    return figures, [sub.to_dict(), drain.to_dict()]


def run_d(server: ManagedServer, p: Params) -> tuple[Figures, list[dict[str, Any]]]:
    r = _fg(
        server,
        function="bench_d",
        clients=4,
        workers=4,
        size=1024 * 1024,
        duration=p.d_duration,
        warmup=p.d_warmup,
    )
    return _fg_figures(r), [r.to_dict()]


def _idle_figures(r: BenchResult) -> Figures:
    figures = _fg_figures(r)
    figures["noops_per_job"] = r.noops_per_job
    figures["idle_connected"] = r.idle_connected
    return figures


def run_e(server: ManagedServer, p: Params) -> tuple[Figures, list[dict[str, Any]]]:
    r = _fg(
        server,
        function="bench_e",
        clients=16,
        workers=4,
        idle=p.e_idle,
        duration=p.e_duration,
        warmup=p.e_warmup,
    )
    return _idle_figures(r), [r.to_dict()]


def run_f(server: ManagedServer, p: Params) -> tuple[Figures, list[dict[str, Any]]]:
    r = _fg(
        server,
        function="bench_f",
        idle_function="bench_f_other",
        clients=16,
        workers=4,
        idle=p.e_idle,
        duration=p.e_duration,
        warmup=p.e_warmup,
    )
    return _idle_figures(r), [r.to_dict()]


def run_big(server: ManagedServer, p: Params) -> tuple[Figures, list[dict[str, Any]]]:
    r = _fg(
        server,
        function="bench_big",
        clients=1,
        workers=1,
        size=p.big_size,
        jobs=1,
        duration=None,
        warmup=0,
        timeout=300,
    )
    hwm = (r.server_hwm_kib or 0) * 1024
    figures: Figures = {
        "round_trip_s": r.seconds,
        "srv_hwm_mib": round(hwm / 2**20, 1),
        "hwm_over_payload": round(hwm / p.big_size, 2),
        "errors": r.errors,
    }
    return figures, [r.to_dict()]


def run_sqlite(server: ManagedServer, p: Params) -> tuple[Figures, list[dict[str, Any]]]:
    r = _fg(
        server,
        mode="bg",
        function="bench_sq",
        clients=4,
        jobs=p.sqlite_jobs,
        duration=300,
        warmup=0,
    )
    figures: Figures = {
        "submit_jobs_per_s": r.jobs_per_s,
        "submit_p99_us": r.p99_us,
        "srv_us_per_job": r.server_us_per_job,
        "errors": r.errors,
    }
    return figures, [r.to_dict()]


_GB = "gearshift bench --server-cmd CMD"
SCENARIOS: dict[str, Scenario] = {
    s.key: s
    for s in (
        Scenario("a", "fg echo, 1 client, 1 worker, 100 B", run_a, SERVERS,
                 (f"{_GB} -f bench_a -c 1 -w 1 -d 8 --warmup 500",)),
        Scenario("b", "fg echo, 16 clients, 4 workers, 100 B", run_b, SERVERS,
                 (f"{_GB} -f bench_b -c 16 -w 4 -d 10 --warmup 2000",)),
        Scenario("c", "200k bg submits (4 submitters, no worker), then 4 drain workers", run_c,
                 SERVERS, (f"{_GB} -m bg -f bench_c -c 4 -n 200000",
                           "gearshift bench -p PORT -m drain -f bench_c -w 4 -n 200000")),
        Scenario("d", "fg echo, 1 MiB payload, 4 clients, 4 workers", run_d, SERVERS,
                 (f"{_GB} -f bench_d -c 4 -w 4 -s 1M -d 8 --warmup 20",)),
        Scenario("e", "as b plus 1000 idle workers on the same function", run_e, SERVERS,
                 (f"{_GB} -f bench_e -c 16 -w 4 --idle 1000 -d 10 --warmup 2000",)),
        Scenario("f", "as b plus 1000 idle workers on another function", run_f, SERVERS,
                 (f"{_GB} -f bench_f --idle-function bench_f_other -c 16 -w 4 --idle 1000 -d 10"
                  " --warmup 2000",)),
        Scenario("big", "one 100 MiB payload round trip, 1 client, 1 worker", run_big, SERVERS,
                 (f"{_GB} -f bench_big -c 1 -w 1 -s 100M -n 1 --warmup 0",)),
        Scenario("sqlite", "5k bg submits (4 submitters) with the SQLite queue", run_sqlite,
                 SQLITE_SERVERS, (f"{_GB} -m bg -f bench_sq -c 4 -n 5000",)),
    )
}  # fmt: skip
