"""The job lifecycle table: every move the scheduler makes is in it, every entry in it
is a move the scheduler makes, and an illegal move is caught.  No sockets."""

from __future__ import annotations

import pytest

from gearshift.protocol.packets import PacketType as T
from gearshift.records import StoredJob
from gearshift.server.model import (
    TRANSITIONS,
    CheckedJob,
    Function,
    IllegalTransition,
    Job,
    JobState,
    Peer,
    check_transition,
)
from gearshift.server.scheduler import Scheduler
from tests.server.fakes import FakeClock, make, peer, take

S = JobState
#: Every (old, new) move made while the recording job type is in use.
SEEN: set[tuple[JobState, JobState]] = set()


class RecordingJob(CheckedJob):
    """A checked job that also records its moves."""

    __slots__ = ()

    @property
    def state(self) -> JobState:
        return CheckedJob.state.fget(self)  # type: ignore[attr-defined,no-any-return]

    @state.setter
    def state(self, new: JobState) -> None:
        try:
            old = CheckedJob.state.fget(self)
        except AttributeError:
            old = None
        CheckedJob.state.fset(self, new)
        if old is not None:
            SEEN.add((old, new))


def _sched(**options: object) -> tuple[Scheduler, FakeClock]:
    return make(job_type=RecordingJob, **options)


def _grab(s: Scheduler, w: Peer) -> bytes:
    s.grab_job(w, ())
    return take(w)[-1][1][0]


def _walk_every_path() -> None:
    """Drive the scheduler through each way a job lives and ends."""
    # Queued, run, completed; queued and reaped after its client left.
    s, clock = _sched(job_retries=1)
    c, w = peer(s), peer(s)
    s.can_do(w, (b"f",))
    s.dispatch[T.SUBMIT_JOB](c, (b"f", b"", b"1"))
    h = _grab(s, w)
    s.work_complete(w, (h, b"done"))
    s.dispatch[T.SUBMIT_JOB](c, (b"f", b"", b"2"))
    s.disconnect(c)  # QUEUED -> IGNORED
    s.grab_job(w, ())  # reaps it: IGNORED -> GONE
    assert take(w) == [(T.NO_JOB, ())]
    # Running, its worker leaves (requeued), then its client leaves while it runs
    # (ignored), then the worker finishes it.
    c = peer(s)
    s.dispatch[T.SUBMIT_JOB](c, (b"f", b"", b"3"))
    w2 = peer(s)
    s.can_do(w2, (b"f",))
    _grab(s, w2)
    s.disconnect(w2)  # RUNNING -> QUEUED
    h = _grab(s, w)
    s.disconnect(c)  # RUNNING -> IGNORED
    s.work_complete(w, (h, b""))  # IGNORED -> GONE
    # Epoch jobs: due, cancelled while delayed.
    s.dispatch[T.SUBMIT_JOB_EPOCH](c, (b"f", b"", str(int(clock.now) + 5).encode(), b"e"))
    clock.advance(10)
    _grab(s, w)
    s.dispatch[T.SUBMIT_JOB_EPOCH](c, (b"f", b"", str(int(clock.now) + 5).encode(), b"e"))
    (late,) = [j for j in s.handles.values() if j.state is S.DELAYED]
    assert s.cancel(late.handle)  # DELAYED -> IGNORED
    # Durable jobs: made durable, refused by the store, left alone by their clients.
    s, clock = _sched(store_done=lambda stored: None)
    c, fg, w = peer(s), peer(s), peer(s)
    for when, data in ((0, b"d1"), (int(clock.now) + 60, b"d2")):
        job = s.submit(c, b"f", b"", data, 1, True, when=when, defer=True)
        assert job is not None
        s.activate(job, c, s.stored_record(job))  # PENDING -> QUEUED / DELAYED
    refused = s.submit(c, b"f", b"", b"d3", 1, True, defer=True)
    assert refused is not None
    s.abort(refused, c, b"")  # PENDING -> GONE
    joined = s.submit(c, b"f", b"u", b"d4", 1, True, defer=True)
    s.dispatch[T.SUBMIT_JOB](fg, (b"f", b"u", b"d4"))  # a foreground client joins it
    s.disconnect(fg)  # PENDING -> IGNORED
    assert joined is not None
    s.activate(joined, c, s.stored_record(joined))
    assert s.withdraw_stored() == 2  # QUEUED -> GONE, DELAYED -> GONE
    # A queued job cancelled; a running job cancelled.
    s.can_do(w, (b"f",))
    s.dispatch[T.SUBMIT_JOB_BG](c, (b"f", b"", b"x"))
    s.dispatch[T.SUBMIT_JOB_BG](c, (b"f", b"", b"y"))
    h = _grab(s, w)
    assert s.cancel(h)
    queued = next(j for j in s.handles.values() if j.state is S.QUEUED)
    assert s.cancel(queued.handle)
    # Replayed from the store, then the draining server leaves it there.
    s.replay(StoredJob(b"f", b"r", b"z"))
    s.drain()


def test_every_move_the_scheduler_makes_is_in_the_table_and_each_entry_is_used() -> None:
    SEEN.clear()
    _walk_every_path()
    table = {(old, new) for old, targets in TRANSITIONS.items() for new in targets}
    assert SEEN <= table  # (CheckedJob would have raised already)
    assert table - SEEN == set(), "entries no path uses: drop them or add the path"


def test_an_illegal_move_is_caught() -> None:
    job = CheckedJob(b"H:1", Function(b"f"), b"", b"", 1, True, 0, b"")
    assert job.state is S.PENDING
    with pytest.raises(IllegalTransition, match="PENDING -> RUNNING"):
        job.state = S.RUNNING  # a job is queued before a worker gets it
    job.state = S.QUEUED
    job.state = S.GONE
    with pytest.raises(IllegalTransition, match="GONE -> QUEUED"):
        job.state = S.QUEUED  # a forgotten job never comes back
    with pytest.raises(IllegalTransition):
        check_transition(S.IGNORED, S.RUNNING)  # an ignored job is reaped, never run


def test_a_scheduler_bug_that_moves_a_job_illegally_fails_the_scheduler_tests() -> None:
    # The schedulers of the unit tests (tests/server/fakes.make) check every move.
    s, _ = make()
    c = peer(s)
    s.dispatch[T.SUBMIT_JOB_BG](c, (b"f", b"", b"x"))
    (job,) = s.handles.values()
    assert isinstance(job, CheckedJob)
    s._remove(job)
    with pytest.raises(IllegalTransition):
        s._enqueue(job)  # a removed job queued again: GONE -> QUEUED


def test_the_state_is_one_slot_and_the_flags_are_views_of_it() -> None:
    assert "state" in Job.__slots__
    assert not {"pending", "alive", "ignore", "queued_flag"} & set(Job.__slots__)
    job = Job(b"H:1", Function(b"f"), b"", b"", 1, True, 0, b"")
    assert job.pending and job.alive and not job.ignore and job.queued_flag
    job.state = S.IGNORED
    assert job.ignore and not job.queued_flag and job.alive and not job.pending
    job.state = S.GONE
    assert not job.alive
