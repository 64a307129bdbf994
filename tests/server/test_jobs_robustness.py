"""The scheduler against peers that misbehave: stuck wakeups, poison epochs, many names,
and draining for shutdown.  Plain calls and a fake clock, no sockets."""

from __future__ import annotations

from gearshift.records import StoredJob
from gearshift.server.model import Peer
from gearshift.server.scheduler import INT64_MAX, Scheduler, strtoll
from tests.server.fakes import FakeClock, make, peer, take
from tests.server.helpers import T


def sleeping_workers(s: Scheduler, n: int, fn: bytes = b"f") -> list[Peer]:
    ws = [peer(s) for _ in range(n)]
    for w in ws:
        s.can_do(w, (fn,))
        s.pre_sleep(w, ())
    return ws


def noops(ws: list[Peer]) -> list[Peer]:
    """The workers that got a NOOP since the last call."""
    return [w for w in ws if take(w) == [(T.NOOP, ())]]


# ---------------------------------------------------------------------- stuck wakeup


def test_a_woken_worker_that_never_grabs_passes_the_wakeup_on() -> None:
    s, clock = make(wakeup_delay=0.05)
    c = peer(s)
    a, b = sleeping_workers(s, 2)
    s.dispatch[T.SUBMIT_JOB_BG](c, (b"f", b"", b"x"))
    assert noops([a, b]) == [a]
    clock.advance(0.049)
    assert noops([a, b]) == []  # not before the delay
    clock.advance(0.002)
    assert noops([a, b]) == [b]  # A never grabbed: B is woken
    s.grab_job(b, ())
    assert take(b)[0][0] == T.JOB_ASSIGN
    clock.advance(1.0)
    assert noops([a, b]) == []
    assert not clock.pending()  # nothing left to check: no timer keeps running


def test_the_wakeup_goes_down_the_line_until_somebody_grabs() -> None:
    s, clock = make(wakeup_delay=0.05)
    c = peer(s)
    ws = sleeping_workers(s, 4)
    s.dispatch[T.SUBMIT_JOB_BG](c, (b"f", b"", b"x"))
    woken = noops(ws)
    for _ in range(3):
        clock.advance(0.05)
        woken += noops(ws)
    assert sorted(map(id, woken)) == sorted(map(id, ws))  # each once, one per delay
    clock.advance(1.0)
    assert noops(ws) == []  # no sleeper left to wake; the job waits for a GRAB


def test_no_pass_on_when_the_woken_worker_grabbed() -> None:
    s, clock = make(wakeup_delay=0.05)
    c = peer(s)
    ws = sleeping_workers(s, 3)
    for i in range(20):
        s.dispatch[T.SUBMIT_JOB_BG](c, (b"f", b"", b"x%d" % i))
        (w,) = noops(ws)
        s.grab_job(w, ())
        take(w)
        s.dispatch[T.WORK_COMPLETE](w, (s.handle_prefix + str(i + 1).encode(), b""))
        s.pre_sleep(w, ())
        take(w)
        clock.advance(0.01)
    clock.advance(1.0)
    assert noops(ws) == []  # one wakeup per job, never more


def test_a_busy_queue_is_not_mistaken_for_a_stuck_worker() -> None:
    # Jobs wait in the queue under load while their woken workers are on their way:
    # only a NOOP whose own worker did not grab is passed on.
    s, clock = make(wakeup_delay=0.05)
    c = peer(s)
    a, b, *others = sleeping_workers(s, 5)
    s.dispatch[T.SUBMIT_JOB_BG](c, (b"f", b"", b"1"))
    assert noops([a, b, *others]) == [a]
    clock.advance(0.04)
    s.dispatch[T.SUBMIT_JOB_BG](c, (b"f", b"", b"2"))
    assert noops([a, b, *others]) == [b]
    s.grab_job(a, ())
    take(a)
    clock.advance(0.011)  # a's NOOP is checked: a grabbed; job 2 waits, b is on its way
    assert noops([a, b, *others]) == []
    s.grab_job(b, ())
    take(b)
    clock.advance(1.0)
    assert noops([a, b, *others]) == []


def test_each_stuck_worker_is_replaced_once_whatever_w_is() -> None:
    s, clock = make(wakeup_delay=0.05, worker_wakeup=2)
    c = peer(s)
    ws = sleeping_workers(s, 6)
    s.dispatch[T.SUBMIT_JOB_BG](c, (b"f", b"", b"x"))
    assert len(noops(ws)) == 2  # -w 2
    clock.advance(0.05)
    assert len(noops(ws)) == 2  # both stuck: one replacement each
    clock.advance(0.05)
    assert len(noops(ws)) == 2
    clock.advance(0.05)
    assert noops(ws) == []  # nobody left asleep


def test_wakeup_delay_zero_keeps_the_old_behaviour() -> None:
    s, clock = make(wakeup_delay=0)
    c = peer(s)
    a, b = sleeping_workers(s, 2)
    s.dispatch[T.SUBMIT_JOB_BG](c, (b"f", b"", b"x"))
    assert noops([a, b]) == [a]
    clock.advance(10)
    assert noops([a, b]) == []
    assert not clock.pending()


def test_pass_on_skips_jobs_that_nobody_wants_any_more() -> None:
    s, clock = make(wakeup_delay=0.05)
    c = peer(s)
    a, b = sleeping_workers(s, 2)
    s.dispatch[T.SUBMIT_JOB](c, (b"f", b"", b"x"))  # foreground
    assert noops([a, b]) == [a]
    s.disconnect(c)  # its client left: the job is ignored, nothing to pass on
    clock.advance(0.1)
    assert noops([a, b]) == []


def test_a_clock_stepped_back_does_not_stall_the_check() -> None:
    s, clock = make(wakeup_delay=0.05)
    c = peer(s)
    a, b = sleeping_workers(s, 2)
    s.dispatch[T.SUBMIT_JOB_BG](c, (b"f", b"", b"x"))
    assert noops([a, b]) == [a]
    clock.now -= 3600  # NTP steps the wall clock back an hour...
    (timer,) = clock.pending()
    clock.timers.remove(timer)
    timer.callback()  # ...while the loop's (monotonic) timer fires on time
    assert noops([a, b]) == [b]


# ---------------------------------------------------------------------- epoch values


def test_strtoll_refuses_what_does_not_fit_64_bits() -> None:
    assert strtoll(b"1700000000") == 1700000000
    assert strtoll(str(INT64_MAX).encode()) == INT64_MAX
    assert strtoll(str(-(2**63)).encode()) == -(2**63)
    assert strtoll(str(INT64_MAX + 1).encode()) is None
    assert strtoll(b"99999999999999999999") is None
    assert strtoll(b"-99999999999999999999") is None
    assert strtoll(b"9" * 5000) is None  # no int() of a huge digit string
    assert strtoll(b"00000000000000000000000000042") == 42
    assert strtoll(b"abc") == 0  # as gearmand: garbage reads as 0 (run now)
    assert strtoll(b" 12xyz") == 12


def test_an_epoch_out_of_range_fails_alone() -> None:
    s, _ = make()
    bad, good = peer(s), peer(s)
    s.dispatch[T.SUBMIT_JOB_EPOCH](bad, (b"f", b"", b"99999999999999999999", b"x"))
    assert take(bad) == [(T.ERROR, (b"INVALID_ARGUMENTS", b"Epoch time out of range"))]
    s.dispatch[T.SUBMIT_JOB_EPOCH](good, (b"f", b"", b"1", b"x"))
    assert take(good)[0][0] == T.JOB_CREATED
    assert s.job_count() == 1


def test_a_huge_can_do_timeout_is_bounded() -> None:
    s, clock = make()
    c, w = peer(s), peer(s)
    s.can_do_timeout(w, (b"f", b"99999999999999999"))
    s.dispatch[T.SUBMIT_JOB_BG](c, (b"f", b"", b"x"))
    s.grab_job(w, ())
    assert take(w)[-1][0] == T.JOB_ASSIGN
    (timer,) = clock.pending()
    assert timer.when - clock.now <= 2**31 / 1000  # about 24.8 days, not 3 million years


# ---------------------------------------------------------------------- idle functions


def test_idle_functions_are_forgotten_after_two_passes() -> None:
    s, _ = make()
    c, w = peer(s), peer(s)
    for i in range(1000):
        s.dispatch[T.SUBMIT_JOB_BG](c, (b"f%d" % i, b"", b"x"))
    take(c)
    assert len(s.functions) == 1000
    for i in range(1000):
        s.can_do(w, (b"f%d" % i,))
        s.grab_job(w, ())
        ((_, (handle, *_)),) = take(w)
        s.work_complete(w, (handle, b"done"))
    s.reset_abilities(w, ())
    assert len(s.functions) == 1000  # still listed by status for a while
    assert s.forget_idle() == 0  # first pass: seen idle
    assert s.forget_idle() == 1000  # second pass: gone
    assert s.functions == {}
    assert s.stats.submitted == {} and s.stats.finished == {}
    assert s.forget_idle() == 0


def test_busy_and_configured_functions_are_kept() -> None:
    s, _ = make()
    c, w = peer(s), peer(s)
    s.can_do(w, (b"has_worker",))
    s.dispatch[T.SUBMIT_JOB_BG](c, (b"has_job", b"", b"x"))
    capped = s.function(b"capped")
    capped.maxqueue = [5, 5, 5]
    s.note_idle(capped)
    back = s.function(b"comes_back")
    s.note_idle(back)
    s.forget_idle()
    s.can_do(w, (b"comes_back",))  # busy again before the second pass
    s.forget_idle()
    s.forget_idle()
    assert set(s.functions) == {b"has_worker", b"has_job", b"capped", b"comes_back"}


def test_a_forgotten_function_comes_back_fresh() -> None:
    s, _ = make()
    c = peer(s)
    s.can_do(c, (b"f",))
    s.reset_abilities(c, ())
    old = s.functions[b"f"]
    s.forget_idle()
    s.forget_idle()
    assert b"f" not in s.functions
    s.dispatch[T.SUBMIT_JOB_BG](c, (b"f", b"", b"x"))
    assert s.functions[b"f"] is not old and s.functions[b"f"].total == 1


# ---------------------------------------------------------------------- draining


def durable_scheduler() -> tuple[Scheduler, FakeClock, list[StoredJob]]:
    done: list[StoredJob] = []
    s, clock = make(store_done=done.append)
    return s, clock, done


def test_drain_refuses_submits_and_leaves_durable_jobs_in_the_store() -> None:
    s, clock, done = durable_scheduler()
    c, w = peer(s), peer(s)
    for i in range(3):
        s.replay(StoredJob(b"f", b"u%d" % i, b"x"))
    s.replay(StoredJob(b"f", b"later", b"x", when=int(clock.now) + 3600))
    s.dispatch[T.SUBMIT_JOB](c, (b"f", b"", b"fg"))  # foreground: still runs
    take(c)
    assert s.drain() == 4
    assert done == []  # rows kept for the next start
    assert s.wanted_count() == 1
    s.dispatch[T.SUBMIT_JOB_BG](c, (b"f", b"", b"late"))
    ((kind, (code, _)),) = take(c)
    assert (kind, code) == (T.ERROR, b"SHUTDOWN_GRACEFUL")
    s.can_do(w, (b"f",))
    s.grab_job(w, ())
    ((_, (handle, _, data)),) = take(w)
    assert data == b"fg"
    s.work_complete(w, (handle, b""))
    assert s.wanted_count() == 0 and s.job_count() == 0


def test_during_a_drain_durable_jobs_that_come_back_stay_in_the_store() -> None:
    s, _, done = durable_scheduler()
    c, w = peer(s), peer(s)
    job = s.replay(StoredJob(b"f", b"u", b"x"))
    assert job is not None
    s.can_do(w, (b"f",))
    s.grab_job(w, ())
    take(w)
    pending = s.submit(c, b"f", b"p", b"y", 1, True, defer=True)
    assert pending is not None
    assert s.drain() == 0  # the running one is not queued, the pending one not yet
    s.disconnect(w)  # the worker dies mid-job: not handed out again
    s.activate(pending, c, StoredJob(b"f", b"p", b"y"))  # durable now: acknowledged
    assert take(c)[0][0] == T.JOB_CREATED
    assert s.left_in_store == 2 and done == []
    assert s.job_count() == 0


# ---------------------------------------------------------------------- GET_STATUS_UNIQUE


def status_unique(s: Scheduler, p: Peer, unique: bytes) -> tuple[bytes, ...]:
    s.get_status_unique(p, (unique,))
    ((kind, args),) = take(p)
    assert kind == T.STATUS_RES_UNIQUE
    return args


def test_status_unique_is_one_lookup_whatever_the_function_count() -> None:
    s, _ = make()
    c = peer(s)
    for i in range(20_000):
        s.function(b"f%d" % i)
    s.dispatch[T.SUBMIT_JOB_BG](c, (b"f19999", b"u", b"x"))
    take(c)
    # A scan of 20,000 functions per request would show up as a pause per packet:
    # find_unique must not look at the functions at all.
    s.functions.clear()
    assert status_unique(s, c, b"u")[:2] == (b"u", b"1")
    assert status_unique(s, c, b"nope")[:2] == (b"nope", b"0")


def test_status_unique_across_functions_and_replacements() -> None:
    s, _ = make()
    c, d, w = peer(s), peer(s), peer(s)
    s.dispatch[T.SUBMIT_JOB](c, (b"f", b"u", b"x"))
    s.dispatch[T.SUBMIT_JOB_BG](c, (b"g", b"u", b"y"))
    take(c)
    assert status_unique(s, d, b"u")[-1] == b"1"  # f's job: one waiting client
    s.disconnect(c)  # f's job is ignored, still findable until reaped
    assert status_unique(s, d, b"u")[1] == b"1"
    s.dispatch[T.SUBMIT_JOB](d, (b"f", b"u", b"z"))  # a fresh job replaces the ignored one
    take(d)
    assert status_unique(s, d, b"u")[-1] in (b"0", b"1")
    s.can_do(w, (b"g",))
    s.grab_job(w, ())
    ((_, (handle, *_)),) = take(w)
    s.work_complete(w, (handle, b""))
    assert status_unique(s, d, b"u")[-1] == b"1"  # only f's new job is left
    s.can_do(w, (b"f",))
    s.grab_job(w, ())
    for kind, args in take(w):
        if kind == T.JOB_ASSIGN:
            s.work_complete(w, (args[0], b""))
    s.grab_job(w, ())
    take(w)
    take(d)
    assert status_unique(s, d, b"u")[1] == b"0"
    assert s.uniques == {}
