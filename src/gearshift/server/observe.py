"""Job timings and state-change log lines, fed by the scheduler's ``JobObserver`` hook.

The scheduler calls the observer only when a job is created, starts, finishes, is
requeued or cancelled, never per packet.  ``JobEvents`` then

* logs one structured line per state change at DEBUG level
  (``job created handle=H:host:1 function=resize priority=1 background=1``), and
* keeps per-function histograms of queue wait (created -> started), run time
  (started -> finished) and store commit time in plain lists, which the Prometheus
  collector and the dashboard read when asked (no client library on the job path).
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable
from typing import Final

from gearshift.server.model import Job

__all__ = ["BUCKETS", "Histogram", "JobEvents"]

logger = logging.getLogger(__name__)

#: Upper bounds in seconds; jobs range from milliseconds to minutes.
BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)


class Histogram:
    """Non-cumulative bucket counts (the last one is +Inf), a sum and a count."""

    __slots__ = ("buckets", "sum", "count")

    def __init__(self) -> None:
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        if seconds < 0.0:
            seconds = 0.0
        self.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def cumulative(self) -> list[int]:
        """Counts of observations <= each bound, +Inf last (Prometheus' layout)."""
        out = []
        total = 0
        for n in self.buckets:
            total += n
            out.append(total)
        return out


def _name(value: bytes) -> str:
    return value.decode("utf-8", "replace")


class JobEvents:
    """The scheduler's observer: timings per function plus debug log lines.

    Args:
        clock: wall-clock seconds; ``time.time`` by default.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.wait: dict[bytes, Histogram] = {}
        self.run: dict[bytes, Histogram] = {}
        self.store_commit: dict[bytes, Histogram] = {}

    @staticmethod
    def _histogram(table: dict[bytes, Histogram], function: bytes) -> Histogram:
        h = table.get(function)
        if h is None:
            h = table[function] = Histogram()
        return h

    def forgotten(self, function: bytes) -> None:
        """The scheduler forgot an idle function: its histograms go too."""
        for table in (self.wait, self.run, self.store_commit):
            table.pop(function, None)

    def created(self, job: Job) -> None:
        job.created = self.clock()
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "job created handle=%s function=%s priority=%d background=%d unique=%r",
                _name(job.handle),
                _name(job.func.name),
                job.priority,
                job.background,
                _name(job.unique),
            )

    def started(self, job: Job) -> None:
        now = self.clock()
        job.started = now
        if job.created:
            self._histogram(self.wait, job.func.name).observe(now - job.created)
        if logger.isEnabledFor(logging.DEBUG):
            worker = job.worker
            logger.debug(
                "job started handle=%s function=%s worker_fd=%d retries=%d",
                _name(job.handle),
                _name(job.func.name),
                worker.fd if worker is not None else -1,
                job.retries,
            )

    def finished(self, job: Job, result: str) -> None:
        if job.started:
            self._histogram(self.run, job.func.name).observe(self.clock() - job.started)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "job finished handle=%s function=%s result=%s",
                _name(job.handle),
                _name(job.func.name),
                result,
            )

    def requeued(self, job: Job) -> None:
        job.started = 0.0
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "job requeued handle=%s function=%s retries=%d",
                _name(job.handle),
                _name(job.func.name),
                job.retries,
            )

    def cancelled(self, job: Job) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "job cancelled handle=%s function=%s", _name(job.handle), _name(job.func.name)
            )

    def stored(self, function: bytes, seconds: float) -> None:
        """A background job's store add (group commit included) took ``seconds``."""
        self._histogram(self.store_commit, function).observe(seconds)
