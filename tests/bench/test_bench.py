"""``gearshift bench`` against real servers: it runs, and the numbers it reports are sane.

No assertion is about speed: the machine is shared, so only consistency is checked
(jobs counted, latencies ordered, no errors, server figures present when it started
the server itself).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gearshift.bench import BenchConfig, BenchError, ManagedServer, run_bench
from gearshift.bench.runner import percentile
from gearshift.cli.bench import parse_size, render
from tests.conftest import ServerFactory
from tests.procs import GEARMAND, free_port, have_gearmand

needs_gearmand = pytest.mark.skipif(not have_gearmand(), reason="needs /usr/sbin/gearmand")
GEARSHIFT_CMD = f"{sys.executable} -m gearshift server -p {{port}} -L 127.0.0.1 -q builtin -l none"
GEARMAND_CMD = f"{GEARMAND} -p {{port}} -L 127.0.0.1 --threads=0 -l none -P {{rundir}}/pid"


def _sane_fg(result: object) -> None:
    from gearshift.bench import BenchResult

    assert isinstance(result, BenchResult)
    assert result.errors == 0, result.error_text
    assert result.jobs > 0
    assert result.jobs_per_s > 0
    assert result.p50_us is not None and result.p99_us is not None and result.max_us is not None
    assert 0 < result.p50_us <= result.p99_us <= result.max_us
    assert result.unfinished == 0


@needs_gearmand
def test_fg_echo_reports_sane_figures(make_any_server: ServerFactory) -> None:
    srv = make_any_server()
    result = run_bench(
        BenchConfig(port=srv.port, clients=3, workers=2, duration=1.0, warmup=50, pipeline=2)
    )
    _sane_fg(result)
    assert result.warmup_jobs >= 50
    assert result.generator_processes >= 2
    # The server was not started by the bench, so it has no server figures.
    assert result.server_cpu_s is None


@needs_gearmand
def test_fixed_job_count_counts_exactly(make_any_server: ServerFactory) -> None:
    srv = make_any_server()
    result = run_bench(
        BenchConfig(port=srv.port, clients=2, workers=1, jobs=500, duration=None, warmup=10)
    )
    _sane_fg(result)
    assert result.jobs == 500
    assert len(result.rate_tenths) == 10


@needs_gearmand
@pytest.mark.parametrize("command", [GEARSHIFT_CMD, GEARMAND_CMD], ids=["gearshift", "gearmand"])
def test_background_submit_then_drain_with_server_figures(command: str) -> None:
    with ManagedServer(command) as server:
        sub = run_bench(
            BenchConfig(mode="bg", port=server.port, clients=2, jobs=3000, duration=60, warmup=0),
            server=server,
        )
        assert sub.errors == 0, sub.error_text
        assert sub.jobs == 3000
        assert sub.p50_us is not None and sub.p99_us is not None and sub.p50_us <= sub.p99_us
        assert sub.server_cpu_s is not None and sub.server_cpu_s > 0
        assert sub.server_hwm_kib and sub.server_hwm_kib > 0
        # 3,000 queued 100-byte jobs take memory; a positive figure, whatever its size.
        assert sub.rss_per_job_bytes is not None and sub.rss_per_job_bytes > 0
        drain = run_bench(
            BenchConfig(mode="drain", port=server.port, workers=2, jobs=3000, duration=60),
            server=server,
        )
        assert drain.errors == 0, drain.error_text
        assert drain.jobs == 3000
        assert drain.jobs_per_s > 0


@needs_gearmand
def test_idle_workers_are_connected_and_counted(make_any_server: ServerFactory) -> None:
    srv = make_any_server()
    result = run_bench(
        BenchConfig(port=srv.port, clients=2, workers=1, idle=30, duration=1.0, warmup=20)
    )
    _sane_fg(result)
    assert result.idle_connected == 30
    assert result.noops_per_job is not None and result.noops_per_job >= 0
    # Every NOOP a sleeper gets is answered; the sleepers may even do some jobs.
    assert result.idle_jobs >= 0


@needs_gearmand
@pytest.mark.parametrize("command", [GEARSHIFT_CMD, GEARMAND_CMD], ids=["gearshift", "gearmand"])
def test_cli_json_with_server_cmd(command: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gearshift", "bench", "--server-cmd", command, "--json",
         "-c", "2", "-w", "1", "-d", "1", "--warmup", "20", "-s", "1K"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["mode"] == "fg" and data["errors"] == 0
    assert data["jobs"] > 0 and data["config"]["size"] == 1024
    assert data["server_cpu_s"] > 0 and data["server_us_per_job"] > 0
    assert data["server_hwm_kib"] > 0


def test_unreachable_server_is_an_error_not_a_hang() -> None:
    port = free_port()
    with pytest.raises(BenchError):
        run_bench(BenchConfig(port=port, clients=1, workers=1, duration=1, connect_timeout=1.0))


def test_cli_reports_unreachable_server() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gearshift", "bench", "-p", str(free_port()),
         "--connect-timeout", "1", "-d", "1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert "gearshift bench:" in out.stderr


def test_parse_size_and_percentile() -> None:
    assert parse_size("100") == 100
    assert parse_size("1K") == 1024
    assert parse_size("1M") == parse_size("1MiB") == 1024 * 1024
    assert parse_size("100M") == 100 * 2**20
    with pytest.raises(Exception, match="not a size"):
        parse_size("lots")
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99.9) == 7.0


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="needs --jobs"):
        BenchConfig(mode="bg").validate()
    with pytest.raises(ValueError, match="mode"):
        BenchConfig(mode="nope").validate()
    with pytest.raises(ValueError, match="clients"):
        BenchConfig(clients=0).validate()


@needs_gearmand
def test_render_names_every_figure(make_gearmand: ServerFactory) -> None:
    srv = make_gearmand()
    result = run_bench(BenchConfig(port=srv.port, clients=1, workers=1, duration=0.5, warmup=5))
    text = render(result)
    for word in ("jobs/s", "p50", "p99", "generator", "errors"):
        assert word in text


@needs_gearmand
def test_worker_and_idle_modes_serve_until_the_duration(make_any_server: ServerFactory) -> None:
    srv = make_any_server()
    idle = run_bench(BenchConfig(mode="idle", port=srv.port, idle=5, duration=0.5))
    assert idle.errors == 0, idle.error_text
    assert idle.idle_connected == 5
    assert idle.seconds >= 0.5
    workers = run_bench(BenchConfig(mode="worker", port=srv.port, workers=2, duration=0.5))
    assert workers.errors == 0, workers.error_text
    assert workers.jobs == 0  # nobody submitted anything
    assert workers.seconds >= 0.5
