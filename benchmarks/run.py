"""``make bench``: gearshift against C++ gearmand, same machine, same generator, same run.

Usage::

    python -m benchmarks.run                    # 3 repeats of every scenario + compare.sh
    python -m benchmarks.run --quick --repeats 1 --no-shared
    python -m benchmarks.run -s "a b" --no-write

For each repeat, each scenario runs against each server (a fresh server process
every time, the server order alternating between repeats), with ``gearshift bench``
as the generator.  The medians over repeats and the ratio gearshift / gearmand go to
stdout and to ``benchmarks/RESULTS.md``; raw JSON goes to ``benchmarks/results/``.
With ``--shared`` (the default when it can build) ``shared/bench/compare.sh`` is also
run once per repeat against both servers, and its figures are added.

A hand-written block between ``<!-- analysis -->`` and ``<!-- /analysis -->`` in an
existing RESULTS.md is carried over to the new one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import shared
from benchmarks.scenarios import SCENARIOS, SERVERS, Figures, Params
from gearshift.bench import BenchError, ManagedServer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass(frozen=True)
class Target:
    """One row of issue 5's targets table."""

    label: str
    scenario: str
    figure: str
    op: str  # ">=" or "<="; compared against the ratio (or the absolute value)
    limit: float
    absolute: bool = False


TARGETS = (
    Target("fg 16 clients x 4 workers jobs/s", "b", "jobs_per_s", ">=", 1.0),
    Target("fg 1 client x 1 worker jobs/s", "a", "jobs_per_s", ">=", 1.0),
    Target("fg p99 latency under load (16x4)", "b", "p99_us", "<=", 1.0),
    Target("server CPU per job (16x4)", "b", "srv_us_per_job", "<=", 1.5),
    Target("server CPU per job (1x1)", "a", "srv_us_per_job", "<=", 1.5),
    Target("bg submit jobs/s, in memory", "c", "submit_jobs_per_s", ">=", 1.0),
    Target("memory per queued bg job (100 B)", "c", "rss_per_job_B", "<=", 1.0),
    Target("1,000 idle workers: jobs/s", "e", "jobs_per_s", ">=", 5.0),
    Target("1 MiB payloads jobs/s", "d", "jobs_per_s", ">=", 1.0),
    Target("100 MiB round trip: server peak RSS / payload", "big", "hwm_over_payload", "<", 4.0,
           absolute=True),
    Target("bg submit jobs/s with SQLite (DESIGN 7)", "sqlite", "submit_jobs_per_s", ">=", 3.0),
)  # fmt: skip

#: Figures where a smaller gearshift/gearmand ratio is better.
LOWER_IS_BETTER = re.compile(r"(_us|_us_per_job.*|_B|_mib|_s|noops_per_job|gen_cpu_s)$")


def machine_facts() -> dict[str, str]:
    def read(path: str) -> str:
        try:
            return Path(path).read_text()
        except OSError:
            return ""

    cpuinfo = read("/proc/cpuinfo")
    model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    mem = re.search(r"MemTotal:\s*(\d+)", read("/proc/meminfo"))

    def cmd(*argv: str) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    try:
        from importlib.metadata import version

        uv = version("uvloop")
    except ImportError:
        uv = "not installed"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model.group(1).strip() if model else "?",
        "memory": f"{int(mem.group(1)) / 2**20:.1f} GiB" if mem else "?",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uvloop": uv,
        "gearmand": cmd("/usr/sbin/gearmand", "--version"),
        "gearshift commit": cmd("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"),
        "fd limit": str(resource.getrlimit(resource.RLIMIT_NOFILE)[0]),
    }


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def median(values: list[float | None]) -> float | None:
    real = [v for v in values if v is not None]
    return statistics.median(real) if real else None


def ratio(mine: float | None, theirs: float | None) -> float | None:
    if mine is None or theirs is None or theirs == 0:
        return None
    return mine / theirs


def fmt(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and abs(v) < 10 and digits == 0:
        digits = 2
    return f"{v:,.{digits}f}"


def spread(values: list[float | None]) -> float | None:
    """(max - min) / median over repeats, in percent."""
    real = [v for v in values if v is not None]
    if len(real) < 2:
        return None
    mid = statistics.median(real)
    return 100.0 * (max(real) - min(real)) / mid if mid else None


Runs = dict[str, dict[str, list[Figures]]]  # scenario -> server -> one Figures per repeat


def run_all(
    keys: list[str], servers: list[str], repeats: int, params: Params, raw_dir: Path
) -> tuple[Runs, list[str]]:
    runs: Runs = {k: {s: [] for s in servers} for k in keys}
    notes: list[str] = []
    raw_dir.mkdir(parents=True, exist_ok=True)
    for rep in range(repeats):
        order = servers if rep % 2 == 0 else list(reversed(servers))
        for key in keys:
            scenario = SCENARIOS[key]
            for name in order:
                cmd = scenario.servers[name]
                t = time.monotonic()
                try:
                    with ManagedServer(cmd) as srv:
                        figures, raw = scenario.run(srv, params)
                except (BenchError, RuntimeError, OSError) as exc:
                    figures, raw = {}, []
                    notes.append(f"{key}/{name} run {rep + 1}: {exc}".splitlines()[0])
                runs[key][name].append(figures)
                (raw_dir / f"{key}-{name}-run{rep + 1}.json").write_text(
                    json.dumps({"command": cmd, "figures": figures, "results": raw}, indent=1)
                )
                main_fig = next(iter(figures.values()), None) if figures else None
                print(
                    f"[{rep + 1}/{repeats}] {key:<6} {name:<9} {time.monotonic() - t:5.1f}s "
                    f"{next(iter(figures), 'FAILED')}={fmt(main_fig)} "
                    f"errors={figures.get('errors', '-')}",
                    file=sys.stderr,
                    flush=True,
                )
    return runs, notes


def scenario_table(key: str, runs: Runs, servers: list[str]) -> list[str]:
    figs: list[str] = []
    for name in servers:
        for f in runs[key][name]:
            figs.extend(k for k in f if k not in figs)
    lines = [
        f"| figure | {' | '.join(f'{s} (median)' for s in servers)} | ratio gearshift/gearmand "
        f"| {' | '.join(f'{s} runs' for s in servers)} |",
        "|---" * (2 + 2 * len(servers)) + "|",
    ]
    for fig in figs:
        if fig == "errors":
            continue
        meds = {s: median([f.get(fig) for f in runs[key][s]]) for s in servers}
        r = ratio(meds.get("gearshift"), meds.get("gearmand"))
        each = [", ".join(fmt(f.get(fig)) for f in runs[key][s]) or "-" for s in servers]
        lines.append(
            f"| {fig} | {' | '.join(fmt(meds[s]) for s in servers)} | "
            f"{fmt(r, 2) if r is not None else '-'} | {' | '.join(each)} |"
        )
    errs = {s: sum(int(f.get("errors") or 0) for f in runs[key][s]) for s in servers}
    lines.append("")
    lines.append("Errors over all runs: " + ", ".join(f"{s} {n}" for s, n in errs.items()))
    return lines


def target_rows(runs: Runs) -> list[str]:
    lines = [
        "| target | scenario | gearmand | gearshift | ratio | goal | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in TARGETS:
        if t.scenario not in runs:
            continue
        by = runs[t.scenario]
        theirs = median([f.get(t.figure) for f in by.get("gearmand", [])])
        mine = median([f.get(t.figure) for f in by.get("gearshift", [])])
        value = mine if t.absolute else ratio(mine, theirs)
        met = "-"
        if value is not None:
            ok = {">=": value >= t.limit, "<=": value <= t.limit, "<": value < t.limit}[t.op]
            met = "yes" if ok else "**no**"
        goal = f"{t.op} {t.limit}" + (" (absolute)" if t.absolute else "x")
        lines.append(
            f"| {t.label} | {t.scenario} | {fmt(theirs)} | {fmt(mine)} | "
            f"{fmt(value, 2) if value is not None else '-'} | {goal} | {met} |"
        )
    return lines


def noise_rows(runs: Runs, servers: list[str]) -> list[str]:
    lines = [
        "| scenario | figure | " + " | ".join(f"{s} spread %" for s in servers) + " |",
        "|---|---|" + "---|" * len(servers),
    ]
    for key, by in runs.items():
        first = next((f for s in servers for f in by[s] if f), None)
        if not first:
            continue
        fig = next(iter(first))
        cells = [fmt(spread([f.get(fig) for f in by[s]]), 1) for s in servers]
        lines.append(f"| {key} | {fig} | " + " | ".join(cells) + " |")
    return lines


SHARED_FIGS = ("jobs_per_s", "p50_us", "p99_us", "srv_hwm_kb", "srv_us_per_job")


def shared_rows(results: dict[str, list[dict[str, dict[str, str]]]]) -> list[str]:
    def num(v: str | None) -> float | None:
        try:
            return float(v) if v not in (None, "", "-", "ERR") else None
        except ValueError:
            return None

    names: list[str] = []
    for runs in results.values():
        for run in runs:
            names.extend(n for n in run if n not in names)
    lines = [
        "| scenario | figure | gearmand | gearshift | ratio |",
        "|---|---|---|---|---|",
    ]
    for scen in names:
        for fig in SHARED_FIGS:
            meds = {
                s: median([num(run.get(scen, {}).get(fig)) for run in results.get(s, [])])
                for s in ("gearmand", "gearshift")
            }
            r = ratio(meds["gearshift"], meds["gearmand"])
            lines.append(
                f"| {scen} | {fig} | {fmt(meds['gearmand'])} | {fmt(meds['gearshift'])} | "
                f"{fmt(r, 2) if r is not None else '-'} |"
            )
        extra = {
            s: "; ".join(run.get(scen, {}).get("extra", "") for run in results.get(s, []))
            for s in ("gearmand", "gearshift")
        }
        if any(text.strip("; ") for text in extra.values()):
            lines.append(f"| {scen} | extra | {extra['gearmand']} | {extra['gearshift']} | |")
    return lines


def render(
    runs: Runs,
    servers: list[str],
    facts: dict[str, str],
    args: argparse.Namespace,
    notes: list[str],
    started: str,
    load: tuple[str, str],
    shared_results: dict[str, list[dict[str, dict[str, str]]]] | None,
    shared_note: str | None,
    analysis: str,
) -> str:
    out = [
        "# gearshift vs C++ gearmand: benchmark results",
        "",
        "Generated by `make bench` (`python -m benchmarks.run "
        + " ".join(args.argv_for_record)
        + f"`), started {started}. Each figure is the **median of {args.repeats} runs**;",
        "ratio = gearshift / gearmand from the same run set, same generator, same machine.",
        "Every scenario starts a fresh server process; the server order alternates between"
        " repeats.",
        "",
        "## Targets (issue 5)",
        "",
        *target_rows(runs),
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in facts.items()],
        f"| load average before / after | {load[0]} / {load[1]} |",
        "",
        "The generator and both servers **share the machine's cores** with whatever else"
        " runs (the load average above tells); see Noise below. The generator is Python"
        " (`gearshift bench`), so it costs more CPU per job than libgearman's `gearbench`:"
        " on 2 cores the generator, not the server, limits"
        " gearmand's jobs/s in a, b, d and f. The compare.sh section below uses gearbench.",
        "",
        "## Server commands",
        "",
        *[f"- {name}: `{cmd}`" for name, cmd in SERVERS.items()],
        f"- sqlite scenario: `{SCENARIOS['sqlite'].servers['gearmand']}` and"
        f" `{SCENARIOS['sqlite'].servers['gearshift']}`",
        "",
        "## Scenarios",
        "",
    ]
    for key in runs:
        sc = SCENARIOS[key]
        out += [f"### {key}: {sc.title}", ""]
        out += [f"    {c}" for c in sc.commands]
        out += [""]
        out += scenario_table(key, runs, servers)
        out += [""]
    out += [
        "## Noise",
        "",
        "Spread = (max - min) / median of the headline figure over the repeats.",
        "",
        *noise_rows(runs, servers),
        "",
    ]
    if notes:
        out += ["Failures:", "", *[f"- {n}" for n in notes], ""]
    out += ["## shared/bench compare.sh (libgearman gearbench generator)", ""]
    if shared_results:
        out += [
            "`compare.sh` from /work/shared/bench, copied and built in a temp dir, run "
            f"{len(next(iter(shared_results.values())))} time(s) per server"
            + (" in quick mode (-q)" if args.quick else "")
            + "; medians.",
            "",
            *[f'    ./compare.sh -l {n}-runN "{c}"' for n, c in SERVERS.items()],
            "",
            *shared_rows(shared_results),
            "",
        ]
    else:
        out += [f"Not run: {shared_note}", ""]
    out += [analysis.strip() or "<!-- analysis -->\n<!-- /analysis -->", ""]
    return "\n".join(out)


def old_analysis(path: Path) -> str:
    try:
        text = path.read_text()
    except OSError:
        return ""
    m = re.search(r"<!-- analysis -->.*?<!-- /analysis -->", text, re.S)
    return m.group(0) if m else ""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n")[0]
    )
    ap.add_argument("-s", "--scenarios", default=" ".join(SCENARIOS), help="space-separated keys")
    ap.add_argument("--servers", default="gearmand gearshift")
    ap.add_argument("-r", "--repeats", type=int, default=3)
    ap.add_argument("-q", "--quick", action="store_true", help="short durations (smoke run)")
    ap.add_argument("--shared", dest="shared", action="store_true", default=True)
    ap.add_argument("--no-shared", dest="shared", action="store_false")
    ap.add_argument("--shared-repeats", type=int, default=1)
    ap.add_argument("--shared-scenarios", default="a b c d e f")
    ap.add_argument("-o", "--output", type=Path, default=HERE / "RESULTS.md")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    args.argv_for_record = argv
    keys = args.scenarios.split()
    unknown = [k for k in keys if k not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenarios {unknown}; known: {' '.join(SCENARIOS)}")
    servers = args.servers.split()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    params = Params().quick() if args.quick else Params()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    facts = machine_facts()
    load0 = loadavg()
    runs, notes = run_all(keys, servers, args.repeats, params, HERE / "results" / stamp)

    shared_results = None
    shared_note = None if args.shared else "disabled (--no-shared)"
    if args.shared:
        shared_note = shared.available()
        if shared_note is None:
            try:
                shared_results = shared.gearbench_compare(
                    {s: SERVERS[s] for s in servers},
                    args.shared_repeats,
                    args.shared_scenarios,
                    args.quick,
                    HERE / "results" / stamp / "compare",
                )
            except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
                shared_note = f"failed: {exc}"
    text = render(
        runs, servers, facts, args, notes, started, (load0, loadavg()),
        shared_results, shared_note, old_analysis(args.output),
    )  # fmt: skip
    print(text)
    if not args.no_write:
        args.output.write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
