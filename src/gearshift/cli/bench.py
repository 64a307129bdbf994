"""``gearshift bench``: load-generate against any Gearman server and print the figures.

Examples::

    gearshift bench -p 4730 --mode fg -c 16 -w 4 -d 10
    gearshift bench --server-cmd "/usr/sbin/gearmand -p {port} -L 127.0.0.1 --threads=0 -l none"
    gearshift bench --server-cmd "gearshift server -p {port} -q builtin" --mode bg -n 200000 -c 4
    gearshift bench -p 4730 --mode drain -n 200000 -w 4
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from typing import TextIO

from gearshift.bench import BenchConfig, BenchError, BenchResult, ManagedServer, Progress, run_bench
from gearshift.bench.runner import MODES

_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1024**2, "MB": 1024**2}
_UNITS |= {"MIB": 1024**2, "G": 1024**3, "GB": 1024**3, "GIB": 1024**3}


def parse_size(text: str) -> int:
    """``100``, ``4K``, ``1M``, ``100MiB`` -> bytes (binary units)."""
    raw = text.strip().upper()
    digits = raw.rstrip("KMGIB")
    unit = raw[len(digits) :]
    if not digits or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    try:
        return int(float(digits) * _UNITS[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gearshift bench",
        description="Load generator for any Gearman server (raw protocol, several processes).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="server address")
    p.add_argument("-p", "--port", type=int, help="server port (default 4730, or a free one)")
    p.add_argument(
        "--server-cmd",
        metavar="CMD",
        help="start this server for the run and measure its CPU and memory; "
        "{port} and {rundir} are substituted; it must not daemonize",
    )
    p.add_argument("-m", "--mode", choices=MODES, default="fg", help="what to load")
    p.add_argument("-f", "--function", default="gearshift_bench", help="function name")
    p.add_argument("-c", "--clients", type=int, default=16, help="client connections")
    p.add_argument("-w", "--workers", type=int, default=4, help="worker connections")
    p.add_argument("--idle", type=int, default=0, help="extra sleeping workers (fg mode)")
    p.add_argument("--idle-function", help="function of the idle workers (default: --function)")
    p.add_argument("-s", "--size", type=parse_size, default=100, help="payload bytes (1K, 1M)")
    p.add_argument("--pipeline", type=int, default=1, help="jobs in flight per client connection")
    p.add_argument("-d", "--duration", type=float, help="measured seconds (fg default 10)")
    p.add_argument("-n", "--jobs", type=int, help="measured jobs (bg and drain need it)")
    p.add_argument("--warmup", type=int, default=1000, help="fg jobs before the window opens")
    p.add_argument("--client-procs", type=int, help="client processes (default min(clients, CPUs))")
    p.add_argument("--worker-procs", type=int, help="worker processes (default min(workers, CPUs))")
    p.add_argument("--no-verify", action="store_true", help="do not compare echoed payloads")
    p.add_argument("--no-unique", action="store_true", help="submit with an empty unique id")
    p.add_argument("--connect-timeout", type=float, default=60.0, help="seconds to connect")
    p.add_argument("--timeout", type=float, default=600.0, help="cap on the whole run")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no live display on a TTY")
    return p


def config_from_args(args: argparse.Namespace, port: int) -> BenchConfig:
    duration = args.duration
    if duration is None and args.jobs is None and args.mode == "fg":
        duration = 10.0
    if args.mode in ("bg", "drain") and duration is None:
        duration = args.timeout  # a cap; the run ends when the jobs are done
    return BenchConfig(
        mode=args.mode,
        host=args.host,
        port=port,
        function=args.function,
        idle_function=args.idle_function,
        size=args.size,
        clients=args.clients,
        workers=args.workers,
        idle=args.idle,
        pipeline=args.pipeline,
        duration=duration,
        jobs=args.jobs,
        warmup=args.warmup if args.mode == "fg" else 0,
        client_procs=args.client_procs,
        worker_procs=args.worker_procs,
        verify=not args.no_verify,
        unique=not args.no_unique,
        connect_timeout=args.connect_timeout,
        timeout=args.timeout,
    )


class ProgressLine:
    """One self-overwriting status line on a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.width = 0

    def __call__(self, p: Progress) -> None:
        text = (
            f"  {p.phase:<8} {p.elapsed:6.1f}s  {p.jobs:>11,} jobs  {p.jobs_per_s:>10,.0f} jobs/s"
        )
        self.width = max(self.width, len(text))
        self.stream.write("\r" + text.ljust(self.width))
        self.stream.flush()

    def clear(self) -> None:
        if self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()


def _us(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def render(r: BenchResult) -> str:
    """The human-readable report."""
    c = r.config
    lines = [
        f"gearshift bench: {r.mode} against {r.address}: {c['clients']} clients, "
        f"{c['workers']} workers, {c['idle']} idle, {c['size']:,} B payload, "
        f"pipeline {c['pipeline']}",
        f"  jobs        {r.jobs:,} in {r.seconds:.2f} s (after {r.warmup_jobs:,} warmup)",
        f"  jobs/s      {r.jobs_per_s:,.1f}",
    ]
    if r.p50_us is not None:
        lines.append(
            f"  latency us  p50 {_us(r.p50_us)}  p90 {_us(r.p90_us)}  p99 {_us(r.p99_us)}  "
            f"p99.9 {_us(r.p999_us)}  max {_us(r.max_us)}"
        )
    if r.rate_tenths:
        lines.append(
            f"  rate by tenth of jobs  {r.rate_tenths[0]:,.0f} -> {r.rate_tenths[-1]:,.0f} jobs/s"
        )
    gen = r.client_cpu_s + r.worker_cpu_s + r.idle_cpu_s
    lines.append(
        f"  generator   {gen:.2f} CPU s in {r.generator_processes} processes "
        f"(clients {r.client_cpu_s:.2f}, workers {r.worker_cpu_s:.2f}, idle {r.idle_cpu_s:.2f}); "
        f"machine busy {r.busy_pct:.0f}%"
    )
    if r.idle_connected:
        lines.append(
            f"  idle        {r.idle_connected} connected, {r.idle_noops:,} NOOPs "
            f"({r.noops_per_job} per job), {r.idle_jobs:,} jobs done by sleepers"
        )
    if r.server_cpu_s is not None:
        lines.append(
            f"  server      {r.server_cpu_s:.2f} CPU s, {_us(r.server_us_per_job)} us/job, "
            f"peak RSS {(r.server_hwm_kib or 0) / 1024:.1f} MiB"
        )
    if r.rss_per_job_bytes is not None:
        lines.append(f"  memory      {r.rss_per_job_bytes:,.0f} B RSS per queued job")
    lines.append(f"  errors      {r.errors}" + (f" ({r.error_text})" if r.error_text else ""))
    if r.unfinished:
        lines.append(f"  unfinished  {r.unfinished} jobs still in flight at the end")
    return "\n".join(lines)


def _raise_fd_limit() -> None:
    # 1,000 idle workers need more descriptors than the usual soft limit of 1,024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str]) -> int:
    """Run ``gearshift bench``; the exit status is 1 when any job failed."""
    args = build_parser().parse_args(argv)
    _raise_fd_limit()
    server: ManagedServer | None = None
    try:
        if args.server_cmd:
            server = ManagedServer(args.server_cmd, port=args.port, host=args.host).start()
            port = server.port
        else:
            port = args.port or 4730
        config = config_from_args(args, port)
        show = None
        if sys.stderr.isatty() and not args.no_progress:
            show = ProgressLine(sys.stderr)
        try:
            result = run_bench(config, server=server, progress=show)
        finally:
            if show is not None:
                show.clear()
    except (BenchError, ValueError, RuntimeError, OSError) as exc:
        print(f"gearshift bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gearshift bench: interrupted", file=sys.stderr)
        return 130
    finally:
        if server is not None:
            server.stop()
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(render(result))
    return 1 if result.errors else 0
