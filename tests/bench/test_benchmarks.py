"""The benchmark report: medians, ratios and the target table, from made-up runs."""

from __future__ import annotations

import asyncio
import importlib

from benchmarks.inprocess import measure
from benchmarks.run import Runs, median, ratio, scenario_table, shared_rows, spread, target_rows
from benchmarks.scenarios import SCENARIOS, Params


def _runs() -> Runs:
    return {
        "b": {
            "gearmand": [{"jobs_per_s": 30000.0, "p99_us": 800.0, "srv_us_per_job": 20.0}] * 3,
            "gearshift": [
                {"jobs_per_s": 29000.0, "p99_us": 700.0, "srv_us_per_job": 40.0},
                {"jobs_per_s": 33000.0, "p99_us": 900.0, "srv_us_per_job": 25.0},
                {"jobs_per_s": 31000.0, "p99_us": 750.0, "srv_us_per_job": 28.0},
            ],
        },
        "big": {
            "gearmand": [{"hwm_over_payload": 2.1}],
            "gearshift": [{"hwm_over_payload": 4.5}],
        },
    }


def test_median_ratio_spread() -> None:
    assert median([3.0, None, 1.0, 2.0]) == 2.0
    assert median([None]) is None
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(1.0, 0.0) is None and ratio(None, 1.0) is None
    assert spread([90.0, 100.0, 110.0]) == 20.0
    assert spread([1.0]) is None


def test_target_table_uses_medians_and_direction() -> None:
    rows = "\n".join(target_rows(_runs()))
    # jobs/s: median 31,000 / 30,000 = 1.03 >= 1.0 -> met
    assert (
        "| fg 16 clients x 4 workers jobs/s | b | 30,000 | 31,000 | 1.03 | >= 1.0x | yes |" in rows
    )
    # p99: 750 / 800 = 0.94 <= 1.0 -> met; CPU: 28 / 20 = 1.40 <= 1.5 -> met
    assert "| 0.94 | <= 1.0x | yes |" in rows
    assert "| 1.40 | <= 1.5x | yes |" in rows
    # The 100 MiB target is absolute: 4.5 is not below 4.
    assert "| 4.50 | < 4.0 (absolute) | **no** |" in rows
    # Scenarios that did not run are left out.
    assert "SQLite" not in rows


def test_scenario_table_lists_every_run() -> None:
    text = "\n".join(scenario_table("b", _runs(), ["gearmand", "gearshift"]))
    assert "29,000, 33,000, 31,000" in text
    assert "Errors over all runs: gearmand 0, gearshift 0" in text


def test_shared_rows_parse_compare_sh_summaries() -> None:
    row = {"jobs_per_s": "100.0", "p50_us": "10", "p99_us": "-", "srv_hwm_kb": "1000"}
    results = {
        "gearmand": [{"a_fg": {**row, "srv_us_per_job": "20", "extra": "x=1"}}],
        "gearshift": [{"a_fg": {**row, "jobs_per_s": "150.0", "srv_us_per_job": "30"}}],
    }
    text = "\n".join(shared_rows(results))
    assert "| a_fg | jobs_per_s | 100 | 150 | 1.50 |" in text
    assert "| a_fg | p99_us | - | - | - |" in text
    assert "| a_fg | extra | x=1 |  | |" in text


def test_every_scenario_is_defined_for_both_servers() -> None:
    importlib.import_module("benchmarks")
    for key, scenario in SCENARIOS.items():
        assert set(scenario.servers) == {"gearmand", "gearshift"}, key
        assert scenario.commands, key
    quick = Params().quick()
    assert quick.b_duration < Params().b_duration


def test_inprocess_benchmark_runs_the_real_hot_path() -> None:
    # A few hundred jobs through real Connection objects: the measurement must be a
    # positive per-job cost, and every job must have completed (else _handle fails).

    best, overhead = asyncio.run(measure(300, 2))
    assert best > overhead > 0


def test_library_benchmark_measures_every_executor() -> None:
    # A real gearshift server, the real AsyncClient/AsyncWorker: every executor and a
    # payload above the StreamReader's old 64 KiB limit come back echoed and counted.
    from benchmarks.library import measure, server
    from benchmarks.scenarios import SERVERS

    with server(SERVERS["gearshift"]) as address:
        for executor in ("thread", "none", "async", "batch"):
            for size in (100, 300_000):
                result = asyncio.run(
                    measure(address, jobs=40, size=size, concurrency=2, executor=executor)
                )
                assert result.jobs_per_s > 0 and result.cpu_us_per_job > 0
