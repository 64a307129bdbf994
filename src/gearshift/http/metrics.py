"""Prometheus ``/metrics``: read at scrape time from the scheduler's own counters.

Nothing is counted twice and nothing is allocated per packet: the scheduler already
keeps per-function job counters, ``Stats`` (submitted, finished by result, packets by
type) and, through ``JobEvents``, wait/run/store-commit histograms.  A custom
``Collector`` turns them into metric families when Prometheus asks.

Names follow the gearman-exporter (``gearman_jobs``, ``gearman_jobs_running``,
``gearman_jobs_waiting``, ``gearman_workers``, ``gearman_up``,
``gearman_version_info``) so existing dashboards keep working; everything else is
labelled by ``function`` only (plus ``result`` or ``command`` where named).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gearshift.protocol.packets import PacketType
from gearshift.server.observe import BUCKETS, Histogram

if TYPE_CHECKING:
    from gearshift.server.server import GearmanServer

__all__ = ["CONTENT_TYPE", "GearmanCollector", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_COMMANDS = {int(t): t.name for t in PacketType}
_COMMANDS[0] = "ADMIN"
_BOUNDS = [repr(float(b)) for b in BUCKETS] + ["+Inf"]


def _name(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _histogram(name: str, doc: str, table: dict[bytes, Histogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["function"])
    for function, h in table.items():
        counts = h.cumulative()
        family.add_metric(
            [_name(function)], list(zip(_BOUNDS, counts, strict=True)), sum_value=h.sum
        )
    return family


class GearmanCollector(Collector):
    """Metric families for one GearmanServer, computed when scraped."""

    def __init__(self, server: GearmanServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        server = self.server
        sched = server.scheduler
        up = GaugeMetricFamily("gearman_up", "Whether the job server answers (always 1 here).")
        up.add_metric([], 1.0)
        yield up
        info = GaugeMetricFamily(
            "gearman_version_info", "Server version.", labels=["version", "server"]
        )
        info.add_metric([server.version, "gearshift"], 1.0)
        yield info
        jobs = GaugeMetricFamily(
            "gearman_jobs", "Jobs of a function: queued plus running.", labels=["function"]
        )
        running = GaugeMetricFamily(
            "gearman_jobs_running", "Jobs a worker is running.", labels=["function"]
        )
        waiting = GaugeMetricFamily(
            "gearman_jobs_waiting", "Jobs waiting for a worker.", labels=["function"]
        )
        workers = GaugeMetricFamily(
            "gearman_workers", "Workers registered for a function.", labels=["function"]
        )
        for f in sched.functions.values():
            label = [_name(f.name)]
            jobs.add_metric(label, f.total)
            running.add_metric(label, f.running)
            waiting.add_metric(label, f.total - f.running)
            workers.add_metric(label, f.workers)
        yield jobs
        yield running
        yield waiting
        yield workers
        connections = GaugeMetricFamily("gearman_connections", "Open connections.")
        connections.add_metric([], len(sched.peers))
        yield connections
        stats = sched.stats
        submitted = CounterMetricFamily(
            "gearman_jobs_submitted",
            "Jobs created (coalesced submits not counted).",
            labels=["function"],
        )
        for function, n in stats.submitted.items():
            submitted.add_metric([_name(function)], n)
        yield submitted
        finished = CounterMetricFamily(
            "gearman_jobs_finished",
            "Jobs that ended, by result: complete, fail, exception.",
            labels=["function", "result"],
        )
        for (function, result), n in stats.finished.items():
            finished.add_metric([_name(function), result], n)
        yield finished
        packets = CounterMetricFamily(
            "gearman_packets",
            "Packets received, by command (ADMIN = admin text lines).",
            labels=["command"],
        )
        for number, n in enumerate(stats.packets):
            if n:
                packets.add_metric([_COMMANDS.get(number, str(number))], n)
        yield packets
        events = server.job_events
        if events is not None:
            yield _histogram(
                "gearman_job_wait_seconds", "Time from submit to a worker's grab.", events.wait
            )
            yield _histogram(
                "gearman_job_run_seconds", "Time from grab to the job's end.", events.run
            )
            yield _histogram(
                "gearman_store_commit_seconds",
                "Time to make a background job durable (group commit included).",
                events.store_commit,
            )


def registry_for(server: GearmanServer) -> CollectorRegistry:
    """A registry of its own (not the global one): several servers may share a process."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GearmanCollector(server))
    ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition format."""
    return generate_latest(registry)
