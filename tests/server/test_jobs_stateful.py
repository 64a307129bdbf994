"""A hypothesis state machine drives the scheduler with random peers and packets and
checks its bookkeeping after every step, then that no background job was lost."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gearshift.server.model import Peer
from tests.server.fakes import make, peer, take
from tests.server.helpers import T

FUNCS = [b"a", b"b", b"c"]
UNIQUES = [b"", b"", b"u1", b"u2", b"-"]
SUBMITS = [
    T.SUBMIT_JOB,
    T.SUBMIT_JOB_BG,
    T.SUBMIT_JOB_HIGH,
    T.SUBMIT_JOB_HIGH_BG,
    T.SUBMIT_JOB_LOW,
    T.SUBMIT_JOB_LOW_BG,
]
GRABS = [T.GRAB_JOB, T.GRAB_JOB_UNIQ, T.GRAB_JOB_ALL]


class SchedulerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.s, self.clock = make()
        self.peers: list[Peer] = [peer(self.s) for _ in range(3)]
        #: Background jobs acknowledged with a fresh handle and not finished or cancelled.
        self.owed: set[bytes] = set()

    def _peer(self, i: int) -> Peer:
        return self.peers[i % len(self.peers)]

    def _drain_out(self) -> None:
        for p in self.peers:
            take(p)

    @rule()
    def connect(self) -> None:
        self.peers.append(peer(self.s))

    @precondition(lambda self: len(self.peers) > 1)
    @rule(i=st.integers(0, 50))
    def disconnect(self, i: int) -> None:
        p = self._peer(i)
        self.s.disconnect(p)
        self.peers.remove(p)
        self._drain_out()

    @rule(i=st.integers(0, 50), f=st.sampled_from(FUNCS), ms=st.sampled_from([None, 0, 500, 3000]))
    def can_do(self, i: int, f: bytes, ms: int | None) -> None:
        p = self._peer(i)
        if ms is None:
            self.s.can_do(p, (f,))
        else:
            self.s.can_do_timeout(p, (f, str(ms).encode()))

    @rule(i=st.integers(0, 50), f=st.sampled_from(FUNCS))
    def cant_do(self, i: int, f: bytes) -> None:
        self.s.cant_do(self._peer(i), (f,))

    @rule(i=st.integers(0, 50))
    def reset(self, i: int) -> None:
        self.s.reset_abilities(self._peer(i), ())

    @rule(i=st.integers(0, 50))
    def pre_sleep(self, i: int) -> None:
        self.s.pre_sleep(self._peer(i), ())

    @rule(
        i=st.integers(0, 50),
        ptype=st.sampled_from(SUBMITS),
        f=st.sampled_from(FUNCS),
        u=st.sampled_from(UNIQUES),
        data=st.sampled_from([b"x", b"y"]),
    )
    def submit(self, i: int, ptype: int, f: bytes, u: bytes, data: bytes) -> None:
        p = self._peer(i)
        before = set(self.s.handles)
        listening = set(p.listening)
        self.s.dispatch[ptype](p, (f, u, data))
        new = set(self.s.handles) - before
        if ptype in (T.SUBMIT_JOB_BG, T.SUBMIT_JOB_HIGH_BG, T.SUBMIT_JOB_LOW_BG):
            self.owed |= new
        else:
            # gearmand semantics: a background job a foreground client coalesced onto
            # is dropped when its clients leave, so it is no longer owed for sure.
            for job in p.listening - listening:
                self.owed.discard(job.handle)

    @rule(i=st.integers(0, 50), f=st.sampled_from(FUNCS), delay=st.integers(0, 5))
    def submit_epoch(self, i: int, f: bytes, delay: int) -> None:
        before = set(self.s.handles)
        when = str(int(self.clock.now) + delay).encode()
        self.s.submit_epoch(self._peer(i), (f, b"", when, b"e"))
        self.owed |= set(self.s.handles) - before

    @rule(i=st.integers(0, 50), grab=st.sampled_from(GRABS))
    def grab(self, i: int, grab: int) -> None:
        self.s.dispatch[grab](self._peer(i), ())

    @rule(
        i=st.integers(0, 50),
        result=st.sampled_from([T.WORK_COMPLETE, T.WORK_FAIL, T.WORK_EXCEPTION, T.WORK_DATA]),
    )
    def result(self, i: int, result: int) -> None:
        p = self._peer(i)
        if not p.jobs:
            return
        job = sorted(p.jobs, key=lambda j: j.handle)[0]
        args = (job.handle,) if result == T.WORK_FAIL else (job.handle, b"r")
        self.s.dispatch[result](p, args)
        if result != T.WORK_DATA:
            self.owed.discard(job.handle)

    @rule(i=st.integers(0, 50))
    def cancel(self, i: int) -> None:
        handles = sorted(self.s.handles)
        if handles:
            h = handles[i % len(handles)]
            self.s.cancel(h)
            self.owed.discard(h)

    @rule(dt=st.sampled_from([0.5, 1.0, 3.5]))
    def tick(self, dt: float) -> None:
        self.clock.advance(dt)

    @invariant()
    def bookkeeping(self) -> None:
        s = self.s
        alive = list(s.handles.values())
        for f in s.functions.values():
            mine = [j for j in alive if j.func is f]
            assert f.total == len(mine), f.name
            assert f.running == sum(1 for j in mine if j.worker is not None), f.name
            assert f.workers == sum(p.abilities.count(f) for p in s.peers), f.name
            queued = [j for q in f.queues for j in q]
            assert all(j.worker is None for j in queued)
            assert sum(f.delayed) == sum(1 for _, _, j in s._epoch_heap if j.func is f)
        for p in s.peers:
            assert all(j.worker is p and j.alive for j in p.jobs)
            assert all(p in j.clients for j in p.listening)
        for job in alive:
            if job.worker is not None:
                assert job in job.worker.jobs
        # every live, wanted job is somewhere a worker can reach it
        heap_jobs = {id(j) for _, _, j in s._epoch_heap}
        for job in alive:
            if job.ignore or job.worker is not None:
                continue
            q = job.func.queues[job.priority]
            assert job in q or id(job) in heap_jobs, job

    def teardown(self) -> None:
        # Drain: a fresh worker for every function takes every job still owed.
        self.clock.advance(3600)
        w = peer(self.s)
        for f in FUNCS:
            self.s.can_do(w, (f,))
        for p in list(self.s.peers):
            if p is not w:
                self.s.disconnect(p)
        got: set[bytes] = set()
        while True:
            self.s.grab_job(w, ())
            ((kind, args),) = take(w)
            if kind == T.NO_JOB:
                break
            got.add(args[0])
            self.s.work_complete(w, (args[0], b""))
        assert self.owed <= got, self.owed - got
        assert not self.s.handles


TestScheduler = pytest.mark.slow(SchedulerMachine.TestCase)
TestScheduler.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
