"""Run ``shared/bench/compare.sh`` (the libgearman ``gearbench`` generator) against both servers.

Standalone: ``python -m benchmarks.shared [-r 2] [-q] [-s "a b"] [--servers gearshift]``
prints compare.sh's lines for each server and a side-by-side table with ratios;
``python -m benchmarks.run`` includes the same table in RESULTS.md.

``compare.sh`` builds ``gearbench`` with ``make`` in its own directory, which is
read-only in CI, so the directory is copied to a temporary one first.  Each server
gets one compare.sh run per repeat; the ``summary.tsv`` rows are parsed and set side
by side with the ratio gearshift / gearmand.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SHARED_BENCH = Path(os.environ.get("GEARSHIFT_SHARED_BENCH", "/work/shared/bench"))

Row = dict[str, str]


def available() -> str | None:
    """None when compare.sh can run here, else why not."""
    if not (SHARED_BENCH / "compare.sh").exists():
        return f"{SHARED_BENCH}/compare.sh not found (set GEARSHIFT_SHARED_BENCH)"
    if shutil.which("make") is None or shutil.which("cc") is None:
        return "make or cc missing"
    if not Path("/usr/include/libgearman-1.0/gearman.h").exists():
        return "libgearman-dev missing"
    return None


def prepare(workdir: Path) -> Path:
    """Copy shared/bench (without its results) to ``workdir`` and build gearbench there."""
    dest = workdir / "bench"
    shutil.copytree(
        SHARED_BENCH, dest, ignore=shutil.ignore_patterns("results", "gearbench", "*.o")
    )
    subprocess.run(["make", "-s", "-C", str(dest)], check=True, stdout=subprocess.DEVNULL)
    return dest


def run_compare(
    bench_dir: Path, label: str, server_cmd: str, scenarios: str, quick: bool, out: Path
) -> dict[str, Row]:
    """One compare.sh run; returns summary.tsv rows by scenario name."""
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.iterdir())
    argv = [str(bench_dir / "compare.sh"), "-l", label, "-o", str(out), "-s", scenarios]
    if quick:
        argv.append("-q")
    argv.append(server_cmd)
    proc = subprocess.run(argv, capture_output=True, text=True)
    sys.stderr.write(proc.stdout)
    new = sorted(set(out.iterdir()) - before)
    if not new or not (new[-1] / "summary.tsv").exists():
        raise RuntimeError(f"compare.sh produced no summary: {proc.stderr[-2000:]}")
    with open(new[-1] / "summary.tsv", newline="") as f:
        return {row["scenario"]: row for row in csv.DictReader(f, delimiter="\t")}


def gearbench_compare(
    servers: dict[str, str], repeats: int, scenarios: str, quick: bool, keep: Path | None
) -> dict[str, list[dict[str, Row]]]:
    """compare.sh for each server, ``repeats`` times, interleaved."""
    results: dict[str, list[dict[str, Row]]] = {name: [] for name in servers}
    with tempfile.TemporaryDirectory(prefix="gearbench-") as tmp:
        bench_dir = prepare(Path(tmp))
        out = keep or Path(tmp) / "results"
        for rep in range(repeats):
            for name, cmd in servers.items():
                print(f"[compare.sh] {name} run {rep + 1}/{repeats}", file=sys.stderr, flush=True)
                results[name].append(
                    run_compare(bench_dir, f"{name}-run{rep + 1}", cmd, scenarios, quick, out)
                )
    return results


def main(argv: list[str] | None = None) -> int:
    import argparse

    from benchmarks.run import shared_rows
    from benchmarks.scenarios import SERVERS

    ap = argparse.ArgumentParser(prog="python -m benchmarks.shared")
    ap.add_argument("-r", "--repeats", type=int, default=1)
    ap.add_argument("-q", "--quick", action="store_true")
    ap.add_argument("-s", "--scenarios", default="a b c d e f")
    ap.add_argument("--servers", default="gearmand gearshift")
    args = ap.parse_args(argv)
    why = available()
    if why:
        print(f"compare.sh cannot run: {why}", file=sys.stderr)
        return 2
    servers = {name: SERVERS[name] for name in args.servers.split()}
    results = gearbench_compare(servers, args.repeats, args.scenarios, args.quick, None)
    print("\n".join(shared_rows(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
