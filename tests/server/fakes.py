"""A fake clock and timers to drive the scheduler without an event loop."""

from __future__ import annotations

from collections.abc import Callable

from gearshift.protocol.codec import Decoder, Packet
from gearshift.server.model import CheckedJob, Peer
from gearshift.server.scheduler import Scheduler


class FakeTimer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Wall clock plus timers; ``advance(dt)`` fires what came due, in order."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now
        self.timers: list[FakeTimer] = []

    def __call__(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(self.now + delay, callback)
        self.timers.append(timer)
        return timer

    def pending(self) -> list[FakeTimer]:
        return [t for t in self.timers if not t.cancelled]

    def advance(self, dt: float) -> None:
        target = self.now + dt
        while True:
            due = sorted(
                (t for t in self.timers if not t.cancelled and t.when <= target),
                key=lambda t: t.when,
            )
            if not due:
                break
            timer = due[0]
            self.timers.remove(timer)
            self.now = max(self.now, timer.when)
            timer.callback()
        self.now = target


def make(**options: object) -> tuple[Scheduler, FakeClock]:
    clock = FakeClock()
    options.setdefault("handle_prefix", b"H:t")
    # Every state change a test makes the scheduler do is checked against the table.
    options.setdefault("job_type", CheckedJob)
    sched = Scheduler(clock, clock, **options)  # type: ignore[arg-type]
    return sched, clock


def peer(sched: Scheduler, host: str = "127.0.0.1") -> Peer:
    p = Peer(host, fd=len(sched.peers) + 10)
    sched.connect(p)
    return p


def take(p: Peer) -> list[tuple[int, tuple[bytes, ...]]]:
    """Decode and clear everything queued for ``p``."""
    data = b"".join(p.out)
    p.out.clear()
    out = []
    for ev in Decoder(allow_admin=False).feed(data):
        assert isinstance(ev, Packet)
        out.append((ev.type, ev.args))
    return out
