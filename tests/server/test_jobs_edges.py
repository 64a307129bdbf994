"""Scheduler edge cases: deferred (store) submits, hooks, timers, lazy deletion."""

from __future__ import annotations

from gearshift.records import StoredJob
from gearshift.server.model import Job, Peer
from tests.server.fakes import make, peer, take
from tests.server.helpers import T
from tests.server.test_jobs import grab, submit

ERR = T.ERROR


class Recorder:
    """A JobObserver and Gate that records what it is told."""

    def __init__(self, allow: bool = True) -> None:
        self.allow = allow
        self.events: list[tuple[str, bytes]] = []

    def created(self, job: Job) -> None:
        self.events.append(("created", job.handle))

    def started(self, job: Job) -> None:
        self.events.append(("started", job.handle))

    def finished(self, job: Job, result: str) -> None:
        self.events.append((result, job.handle))

    def requeued(self, job: Job) -> None:
        self.events.append(("requeued", job.handle))

    def cancelled(self, job: Job) -> None:
        self.events.append(("cancelled", job.handle))

    def may_register(self, peer: Peer, function: bytes) -> bool:
        return self.allow

    def may_submit(self, peer: Peer, function: bytes) -> bool:
        return self.allow


def test_observer_sees_every_transition() -> None:
    s, _ = make()
    rec = Recorder()
    s.observer = rec
    c, w = peer(s), peer(s)
    s.can_do(w, (b"f",))
    h1 = submit(s, c, b"f")
    grab(s, w)
    s.disconnect(w)
    w2 = peer(s)
    s.can_do(w2, (b"f",))
    grab(s, w2)
    s.work_complete(w2, (h1, b"r"))
    take(c)
    h2 = submit(s, c, b"f")
    s.cancel(h2)
    assert rec.events == [
        ("created", h1),
        ("started", h1),
        ("requeued", h1),
        ("started", h1),
        ("complete", h1),
        ("created", h2),
        ("cancelled", h2),
    ]


def test_gate_refuses_register_and_submit() -> None:
    s, _ = make()
    s.gate = Recorder(allow=False)
    p = peer(s)
    denied = (ERR, (b"PERMISSION_DENIED", b"Not authorised for this function"))
    s.can_do(p, (b"f",))
    s.can_do_timeout(p, (b"f", b"5"))
    s.dispatch[T.SUBMIT_JOB](p, (b"f", b"", b"x"))
    assert take(p) == [denied, denied, denied]
    assert not p.funcs and not s.handles


def test_deferred_submit_activate_and_abort() -> None:
    s, _ = make()
    c, fg, w = peer(s), peer(s), peer(s)
    s.can_do(w, (b"f",))
    job = s.submit(c, b"f", b"u", b"x", 1, True, defer=True)
    assert job is not None and job.pending and take(c) == []
    assert grab(s, w) == (T.NO_JOB, ())  # not queued before the store said yes
    # a foreground client coalesces onto the pending job
    s.dispatch[T.SUBMIT_JOB](fg, (b"f", b"u", b"y"))
    assert take(fg) == [(T.JOB_CREATED, (job.handle,))]
    rec = StoredJob(b"f", b"u", b"x")
    s.activate(job, c, rec)
    assert take(c) == [(T.JOB_CREATED, (job.handle,))]
    assert job.stored is rec and grab(s, w)[1][0] == job.handle
    # a refused one: waiting clients get WORK_FAIL, the submitter the error
    job2 = s.submit(c, b"f", b"v", b"x", 1, True, defer=True)
    assert job2 is not None
    s.dispatch[T.SUBMIT_JOB](fg, (b"f", b"v", b"y"))
    take(fg)
    s.abort(job2, c, b"boom")
    assert take(fg) == [(T.WORK_FAIL, (job2.handle,))]
    assert c.out == [b"boom"]
    assert job2.handle not in s.handles and b"v" not in s.uniques


def test_deferred_submit_whose_clients_left_is_forgotten_after_add() -> None:
    done: list[StoredJob] = []
    s, _ = make(store_done=done.append)
    c, fg = peer(s), peer(s)
    job = s.submit(c, b"f", b"u", b"x", 1, True, defer=True)
    assert job is not None
    s.dispatch[T.SUBMIT_JOB](fg, (b"f", b"u", b"y"))
    s.disconnect(fg)
    rec = StoredJob(b"f", b"u", b"x")
    s.activate(job, c, rec)
    assert done == [rec]  # the row just written is removed again
    assert job.handle not in s.handles
    assert take(c) == [(T.JOB_CREATED, (job.handle,))]


def test_deferred_submit_coalesced_elsewhere_fails_its_foreground_clients() -> None:
    # A clustered store says another server already holds this unique: the job is
    # not queued here, so a foreground client that joined it meanwhile would wait
    # forever for a result this server never gets.  It gets WORK_FAIL instead.
    done: list[StoredJob] = []
    s, _ = make(store_done=done.append)
    c, fg, w = peer(s), peer(s), peer(s)
    s.can_do(w, (b"f",))
    job = s.submit(c, b"f", b"u", b"x", 1, True, defer=True)
    assert job is not None
    s.dispatch[T.SUBMIT_JOB](fg, (b"f", b"u", b"y"))
    assert take(fg) == [(T.JOB_CREATED, (job.handle,))]
    rec = StoredJob(b"f", b"u", b"x", coalesced=True)
    s.activate(job, c, rec)
    assert take(fg) == [(T.WORK_FAIL, (job.handle,))]
    assert take(c) == [(T.JOB_CREATED, (job.handle,))]
    assert done == [rec]
    assert job.handle not in s.handles and not fg.listening
    assert grab(s, w) == (T.NO_JOB, ())


def test_epoch_timer_rearms_for_an_earlier_job_only() -> None:
    s, clock = make()
    c, w = peer(s), peer(s)
    s.can_do(w, (b"f",))
    now = int(clock.now)
    s.submit_epoch(c, (b"f", b"", str(now + 100).encode(), b"late"))
    s.submit_epoch(c, (b"f", b"", str(now + 200).encode(), b"later"))  # timer kept
    assert len(clock.pending()) == 1
    s.submit_epoch(c, (b"f", b"", str(now + 10).encode(), b"soon"))  # timer moved earlier
    assert len(clock.pending()) == 1 and clock.pending()[0].when == now + 10
    take(c)
    clock.advance(11)
    assert grab(s, w)[1][2] == b"soon"
    clock.advance(200)
    assert [grab(s, w)[1][2] for _ in range(2)] == [b"late", b"later"]


def test_cancelled_epoch_job_is_dropped_when_due() -> None:
    s, clock = make()
    c, w = peer(s), peer(s)
    s.can_do(w, (b"f",))
    s.submit_epoch(c, (b"f", b"", str(int(clock.now) + 5).encode(), b"x"))
    ((_, (h,)),) = take(c)
    s.cancel(h)
    s.pre_sleep(w, ())
    clock.advance(6)
    assert take(w) == []  # an ignored job wakes nobody
    s.pre_sleep(w, ())  # _has_runnable reaps it
    assert take(w) == [] and not s.handles


def test_sleeping_worker_learns_new_function() -> None:
    s, _ = make()
    c, w = peer(s), peer(s)
    s.can_do(w, (b"a",))
    s.pre_sleep(w, ())
    submit(s, c, b"b", ptype=T.SUBMIT_JOB_BG)
    s.can_do(w, (b"b",))  # work is waiting for the new function: NOOP now
    assert take(w) == [(T.NOOP, ())]
    w2 = peer(s)
    s.can_do(w2, (b"a",))
    s.pre_sleep(w2, ())
    s.can_do(w2, (b"c",))  # nothing waiting: it sleeps on c too
    submit(s, c, b"c", ptype=T.SUBMIT_JOB_BG)
    assert take(w2) == [(T.NOOP, ())]


def test_requeue_wakes_a_sleeper_and_drops_ignored_running_job() -> None:
    s, _ = make()
    c, w1, w2 = peer(s), peer(s), peer(s)
    for w in (w1, w2):
        s.can_do(w, (b"f",))
    h = submit(s, c, b"f", ptype=T.SUBMIT_JOB_BG)
    grab(s, w1)
    s.pre_sleep(w2, ())
    s.disconnect(w1)
    assert take(w2) == [(T.NOOP, ())]
    assert grab(s, w2)[1][0] == h
    # a running job whose client left is dropped, not requeued, when its worker goes
    fg = peer(s)
    h2 = submit(s, fg, b"f")
    grab(s, w2)
    s.disconnect(fg)
    s.disconnect(w2)
    assert h2 not in s.handles


def test_multi_function_grab_skips_ignored_jobs() -> None:
    s, _ = make()
    c, c2, w = peer(s), peer(s), peer(s)
    s.can_do(w, (b"a",))
    s.can_do(w, (b"b",))
    submit(s, c, b"b")
    keep = submit(s, c2, b"b")
    s.disconnect(c)
    assert grab(s, w)[1][0] == keep


def test_odd_calls_are_harmless() -> None:
    s, _ = make()
    c, w = peer(s), peer(s)
    s.disconnect(c)
    s.disconnect(c)  # twice
    s.send(c, b"dropped")  # to a closed peer
    assert c.out == []
    s.cant_do(w, (b"never-registered",))
    h = submit(s, w, b"f")
    s._detach(s.handles[h], c)  # not a listener
    assert s.handles[h].clients == [w]
    assert repr(s.handles[h]).startswith("<Job b'H:t:1' b'f'")
    f = s.function(b"gone")
    s.drop_function(f)
    assert b"gone" not in s.functions
    assert s.job_count() == 1
    s.handle(w, T.ECHO_REQ, (b"e",))
    assert take(w)[-1] == (T.ECHO_RES, (b"e",))
    w.out.append(b"x")
    s.dirty.append(w)
    s.flush()  # Peer.flush is a no-op; the dirty list is reset
    assert s.dirty == []


def test_work_data_warning_fail_and_fail_for_unknown() -> None:
    s, _ = make()
    c, w = peer(s), peer(s)
    s.can_do(w, (b"f",))
    h = submit(s, c, b"f")
    grab(s, w)
    s.work_data(w, (h, b"d"))
    s.work_warning(w, (h, b"w"))
    s.work_status(w, (b"H:none", b"1", b"2"))
    s.work_exception(w, (b"H:none", b"e"))
    s.work_fail(w, (h,))
    assert take(c) == [
        (T.WORK_DATA, (h, b"d")),
        (T.WORK_WARNING, (h, b"w")),
        (T.WORK_FAIL, (h,)),
    ]
    assert [kind for kind, _ in take(w)] == [ERR, ERR]
    s.work_fail(w, (h,))
    assert take(w) == [(ERR, (b"JOB_NOT_FOUND", b"Job given in work result not found"))]


def test_grab_all_without_reducer_and_stored_record() -> None:
    s, _ = make()
    c, w = peer(s), peer(s)
    s.can_do(w, (b"f",))
    h = submit(s, c, b"f", b"u", b"d", T.SUBMIT_JOB_LOW_BG)
    rec = s.stored_record(s.handles[h])
    assert (rec.function, rec.unique, rec.data, int(rec.priority), rec.when) == (
        b"f", b"u", b"d", 2, 0,
    )  # fmt: skip
    assert grab(s, w, T.GRAB_JOB_ALL) == (T.JOB_ASSIGN_UNIQ, (h, b"f", b"u", b"d"))


def test_worker_loss_cancels_the_jobs_timer() -> None:
    s, clock = make()
    c, w = peer(s), peer(s)
    s.can_do_timeout(w, (b"f", b"2000"))
    h = submit(s, c, b"f")
    grab(s, w)
    assert len(clock.pending()) == 1
    s.disconnect(w)
    assert clock.pending() == []
    assert s.handles[h].retries == 1


def test_ignored_job_known_by_unique_until_reaped_but_not_joined() -> None:
    s, _ = make()
    c, c2, w = peer(s), peer(s), peer(s)
    h = submit(s, c, b"f", b"u")
    s.disconnect(c)
    s.get_status_unique(c2, (b"u",))
    assert take(c2) == [(T.STATUS_RES_UNIQUE, (b"u", b"1", b"0", b"0", b"0", b"0"))]
    h2 = submit(s, c2, b"f", b"u")  # a fresh job, not the abandoned one
    assert h2 != h
    s.can_do(w, (b"f",))
    assert grab(s, w)[1][0] == h2  # the ignored one is reaped on the way
    assert h not in s.handles


def test_cant_do_while_asleep_stops_wakeups_for_that_function() -> None:
    s, _ = make()
    c, w = peer(s), peer(s)
    s.can_do(w, (b"d1",))
    s.can_do(w, (b"d2",))
    s.pre_sleep(w, ())
    s.cant_do(w, (b"d1",))
    submit(s, c, b"d1", ptype=T.SUBMIT_JOB_BG)
    assert take(w) == []
    submit(s, c, b"d2", ptype=T.SUBMIT_JOB_BG)  # still asleep on d2
    assert take(w) == [(T.NOOP, ())]
