"""Waking sleeping workers: one NOOP per new job, and each NOOP checked.

Waking one worker per job (not all, as gearmand does) is what keeps a thousand idle
workers cheap; but a woken worker may never grab (hung, busy elsewhere, a forked child
that died while its parent holds the socket).  So every NOOP is checked
``wakeup_delay`` later: if its worker has not grabbed since and a job of the function
is still waiting, the next sleeper is woken instead.

Each ``Function`` keeps a deque of (worker, sleep cycle) entries; an entry whose worker
has grabbed, left, or slept again since is stale and is skipped when popped.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Final, Protocol

from gearshift.protocol.codec import encode_header
from gearshift.protocol.packets import PacketType
from gearshift.server.model import Function, Peer, TimerHandle

logger = logging.getLogger(__name__)

NOOP_PACKET: Final = encode_header(PacketType.NOOP, 0)


class WakeupHost(Protocol):
    """What the wakeups need from the scheduler."""

    def send(self, peer: Peer, data: bytes) -> None: ...

    def has_runnable(self, f: Function) -> bool: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle: ...

    def now(self) -> float: ...


class Wakeups:
    """The sleepers of every function, and the checks of the NOOPs sent to them.

    Args:
        host: sends the NOOPs, tells whether a function still has a job, arms timers.
        worker_wakeup: sleeping workers woken per new job; 0 wakes all of them.
        delay: seconds after which a job still queued after its NOOP wakes the next
            sleeping worker; 0 = never.
    """

    __slots__ = ("host", "worker_wakeup", "delay", "checks", "timer")

    def __init__(self, host: WakeupHost, worker_wakeup: int, delay: float) -> None:
        self.host = host
        self.worker_wakeup = worker_wakeup
        self.delay = delay
        #: NOOPs to check ``delay`` after they went out: (due, worker, its sleep
        #: cycle, function), in due order, with one timer armed for the first.
        self.checks: deque[tuple[float, Peer, int, Function]] = deque()
        self.timer: TimerHandle | None = None

    def sleep(self, f: Function, peer: Peer) -> None:
        """``peer`` sleeps in its current cycle, waiting for a job of ``f``."""
        sleepers = f.sleepers
        sleepers.append((peer, peer.sleep_seq))
        if len(sleepers) > 2 * f.workers + 16:
            # Workers that slept many times without a job for this function leave
            # stale entries behind; keep the deque proportional to live sleepers.
            live = [
                (p, s)
                for p, s in sleepers
                if p.sleeping and not p.noop_sent and p.sleep_seq == s and not p.closed
            ]
            sleepers.clear()
            sleepers.extend(live)

    def wake(self, f: Function, jobs: int) -> None:
        """NOOP up to ``worker_wakeup * jobs`` sleeping workers of ``f`` (0 = all)."""
        per_job = self.worker_wakeup
        self.noop(f, per_job * jobs if per_job > 0 else len(f.sleepers))

    def noop(self, f: Function, budget: int) -> None:
        """NOOP up to ``budget`` sleepers of ``f``, each NOOP checked later."""
        sleepers = f.sleepers
        send = self.host.send
        check = self.delay > 0
        due = 0.0
        while sleepers and budget > 0:
            peer, seq = sleepers.popleft()
            if peer.sleeping and not peer.noop_sent and peer.sleep_seq == seq and not peer.closed:
                peer.noop_sent = True
                send(peer, NOOP_PACKET)
                budget -= 1
                if check:
                    if not due:
                        due = self.host.now() + self.delay
                        if self.timer is None:
                            self.timer = self.host.call_later(self.delay, self._due)
                    self.checks.append((due, peer, seq, f))

    def _due(self) -> None:
        """Pass on the wakeups of workers that did not grab within ``delay``."""
        self.timer = None
        host = self.host
        now = host.now()
        delay = self.delay
        checks = self.checks
        while checks:
            due, peer, seq, f = checks[0]
            # A wall clock stepped back would make an entry look far in the future.
            if now < due <= now + delay:
                break
            checks.popleft()
            if (
                peer.sleeping
                and peer.noop_sent
                and peer.sleep_seq == seq
                and not peer.closed  # (disconnect passed its wakeup on already)
                and f.sleepers
                and host.has_runnable(f)
            ):
                # Woken, never grabbed, and the job still waits: the next one, please.
                logger.debug(
                    "worker fd %d did not grab %gs after its wakeup: waking another for %r",
                    peer.fd,
                    delay,
                    f.name,
                )
                self.noop(f, 1)
        if checks and self.timer is None:
            self.timer = host.call_later(max(checks[0][0] - now, 0.001), self._due)


__all__ = ["NOOP_PACKET", "WakeupHost", "Wakeups"]
