"""Profile the gearshift server under a benchmark scenario's load.

Usage::

    python -m benchmarks.profile -s b --tool cprofile      # deterministic, per function
    python -m benchmarks.profile -s e --tool py-spy        # sampling, includes C/syscall time
    python -m benchmarks.profile -s c --tool py-spy --native

``cprofile`` runs the server as ``python -m cProfile -o FILE -m gearshift server ...``
and prints the functions with the most own time once the server has been stopped
with SIGTERM.  ``py-spy`` attaches to a normally started server for the middle of
the load and prints own and inclusive shares of the samples.  The load is the
scenario's ``gearshift bench`` run (see ``benchmarks.scenarios``), so figures are
comparable with RESULTS.md (cProfile itself slows the server down several times;
read its output as shares, not speeds).
"""

from __future__ import annotations

import argparse
import collections
import io
import pstats
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.scenarios import SCENARIOS, Params
from gearshift.bench import ManagedServer

SERVER = "-m gearshift server -p {port} -L 127.0.0.1 -q builtin -l none"


def summarize_raw(path: Path, top: int) -> str:
    """Own and inclusive sample shares from py-spy's ``--format raw`` (collapsed stacks)."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = []
        for frame in stack.split(";"):
            name, _, where = frame.partition(" (")
            module = where.split(":")[0].rsplit("/", 1)[-1].rstrip(")")
            frames.append(f"{name} ({module})")
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    if not total:
        return "no samples"
    out = [f"{total} samples", "", "own time:"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    out += ["", "inclusive:"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in incl.most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    ap.add_argument("-s", "--scenario", default="b", choices=sorted(SCENARIOS))
    ap.add_argument("--tool", choices=("cprofile", "py-spy"), default="py-spy")
    ap.add_argument("--native", action="store_true", help="py-spy: include C frames")
    ap.add_argument("--seconds", type=float, default=6.0, help="py-spy sampling time")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("-o", "--output", type=Path, help="keep the raw profile here")
    args = ap.parse_args(argv)

    scenario = SCENARIOS[args.scenario]
    params = Params()
    tmp = Path(tempfile.mkdtemp(prefix="gearshift-profile-"))
    try:
        if args.tool == "cprofile":
            prof = args.output or tmp / "server.prof"
            cmd = f"{sys.executable} -m cProfile -o {prof} {SERVER}"
            with ManagedServer(cmd) as srv:
                figures, _ = scenario.run(srv, params)
            # ManagedServer.stop() sent SIGTERM; cProfile wrote the file on the way out.
            text = io.StringIO()
            stats = pstats.Stats(str(prof), stream=text)
            stats.sort_stats("tottime").print_stats(args.top)
            stats.sort_stats("cumulative").print_stats(args.top)
            print(text.getvalue())
        else:
            spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            raw = args.output or tmp / "server.raw"
            with ManagedServer(f"{sys.executable} {SERVER}") as srv:
                done: dict[str, object] = {}

                def load() -> None:
                    done["figures"] = scenario.run(srv, params)[0]

                thread = threading.Thread(target=load)
                thread.start()
                time.sleep(3.0)  # past start-up, idle-worker connects and warmup
                spy_args = [spy, "record", "-p", str(srv.pid), "-d", str(int(args.seconds))]
                spy_args += ["-r", "200", "-f", "raw", "-o", str(raw)]
                spy_args += ["--native"] if args.native else ["--nonblocking"]
                subprocess.run(spy_args, check=True, capture_output=True)
                thread.join()
                figures = done.get("figures", {})  # type: ignore[assignment]
            print(summarize_raw(raw, args.top))
        print(f"\nscenario {args.scenario} figures under the profiler: {figures}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
