"""``gearshift bench``: a load generator for any Gearman server.

The load runs in several processes (``load``), each an event loop of raw-protocol
connections built on gearshift's sans-IO codec; ``runner`` times the window and
merges the figures; ``procfs`` measures a server the bench started itself.
"""

from gearshift.bench.procfs import ManagedServer
from gearshift.bench.runner import BenchConfig, BenchError, BenchResult, Progress, run_bench

__all__ = ["BenchConfig", "BenchError", "BenchResult", "ManagedServer", "Progress", "run_bench"]
