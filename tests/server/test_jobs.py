"""Unit tests of the pure scheduler: plain calls, a fake clock, no sockets."""

from __future__ import annotations

import pytest

from gearshift.records import StoredJob
from gearshift.server.scheduler import DropPeer, Scheduler, atoi
from tests.server.fakes import make, peer, take
from tests.server.helpers import T

ERR = T.ERROR


def submit(
    s: Scheduler,
    c: object,
    fn: bytes,
    unique: bytes = b"",
    data: bytes = b"x",
    ptype: int = T.SUBMIT_JOB,
) -> bytes:
    s.dispatch[ptype](c, (fn, unique, data))  # type: ignore[arg-type]
    ((kind, args),) = take(c)  # type: ignore[arg-type]
    assert kind == T.JOB_CREATED, (kind, args)
    return args[0]


def grab(s: Scheduler, w: object, ptype: int = T.GRAB_JOB) -> tuple[int, tuple[bytes, ...]]:
    s.dispatch[ptype](w, ())  # type: ignore[arg-type]
    ((kind, args),) = take(w)  # type: ignore[arg-type]
    return kind, args


def test_atoi_is_c_like() -> None:
    assert [atoi(x) for x in (b"12", b" 7x", b"-3", b"abc", b"", b"+5")] == [12, 7, -3, 0, 0, 5]


def test_checklist_06_coalescing_rules() -> None:
    s, _ = make()
    c1, c2, c3 = peer(s), peer(s), peer(s)
    # empty unique: never coalesced
    assert submit(s, c1, b"f") != submit(s, c2, b"f")
    # same unique across fg/bg and priorities -> one job, first payload and priority win
    h = submit(s, c1, b"f", b"u", b"first")
    assert submit(s, c2, b"f", b"u", b"second", T.SUBMIT_JOB_HIGH) == h
    assert submit(s, c3, b"f", b"u", b"third", T.SUBMIT_JOB_BG) == h
    job = s.handles[h]
    assert (job.data, job.priority, job.background) == (b"first", 1, False)
    assert len(job.clients) == 2  # the bg submitter does not listen
    # same unique, other function -> separate job
    assert submit(s, c1, b"g", b"u") != h
    # '-' coalesces on identical payloads only, and keeps '-' as the unique
    d1 = submit(s, c1, b"f", b"-", b"payload")
    assert submit(s, c2, b"f", b"-", b"payload") == d1
    assert submit(s, c2, b"f", b"-", b"different") != d1
    assert s.handles[d1].unique == b"-"
    # '-' with an empty payload is not coalesced (gearmand)
    assert submit(s, c1, b"f", b"-", b"") != submit(s, c2, b"f", b"-", b"")


def test_checklist_06_coalesces_onto_running_job() -> None:
    s, _ = make()
    c1, c2, w = peer(s), peer(s), peer(s)
    s.can_do(w, (b"f",))
    h = submit(s, c1, b"f", b"u")
    assert grab(s, w)[0] == T.JOB_ASSIGN
    assert submit(s, c2, b"f", b"u") == h
    s.work_complete(w, (h, b"r"))
    assert take(c1) == take(c2) == [(T.WORK_COMPLETE, (h, b"r"))]
    # finished: the unique is free again
    assert submit(s, c1, b"f", b"u") != h


def test_checklist_07_unique_size_limit() -> None:
    s, _ = make()
    c = peer(s)
    u64 = b"u" * 64
    h = submit(s, c, b"f", u64)
    assert s.handles[h].unique == u64  # stored intact (gearmand 1.1 truncates to 63)
    s.dispatch[T.SUBMIT_JOB](c, (b"f", b"u" * 65, b"x"))
    assert take(c) == [(ERR, (b"ARGUMENT_TOO_LARGE", b"Unique value too large"))]
    s.dispatch[T.SUBMIT_REDUCE_JOB](c, (b"f", b"u", b"r" * 65, b"", b"x"))
    assert take(c) == [(ERR, (b"ARGUMENT_TOO_LARGE", b"Unique value too large"))]


def test_checklist_08_global_priority_across_functions() -> None:
    s, _ = make()
    c, w = peer(s), peer(s)
    s.can_do(w, (b"a",))
    s.can_do(w, (b"b",))
    low_a = submit(s, c, b"a", ptype=T.SUBMIT_JOB_LOW_BG)
    norm_a = submit(s, c, b"a", ptype=T.SUBMIT_JOB_BG)
    high_b = submit(s, c, b"b", ptype=T.SUBMIT_JOB_HIGH_BG)
    order = [grab(s, w)[1][0] for _ in range(3)]
    assert order == [high_b, norm_a, low_a]
    assert grab(s, w)[0] == T.NO_JOB


def test_checklist_08_fifo_within_priority_and_requeue_to_tail() -> None:
    s, _ = make()
    c, w1, w2 = peer(s), peer(s), peer(s)
    for w in (w1, w2):
        s.can_do(w, (b"f",))
    h = [submit(s, c, b"f", ptype=T.SUBMIT_JOB_BG) for _ in range(3)]
    assert grab(s, w1)[1][0] == h[0]
    s.disconnect(w1)  # h0 goes to the tail
    assert [grab(s, w2)[1][0] for _ in range(3)] == [h[1], h[2], h[0]]
    assert s.handles[h[0]].retries == 1


def test_lost_worker_requeues_its_jobs_newest_first() -> None:
    # gearmand walks the worker's job list from its head (the latest grab) and
    # appends each to the queue; clients can see the order, so keep it exactly.
    s, _ = make()
    c, w1, w2 = peer(s), peer(s), peer(s)
    for w in (w1, w2):
        s.can_do(w, (b"f",))
    h = [submit(s, c, b"f", ptype=T.SUBMIT_JOB_BG) for _ in range(40)]
    held = [grab(s, w1)[1][0] for _ in range(30)]
    assert held == h[:30]
    s.disconnect(w1)
    order = [grab(s, w2)[1][0] for _ in range(40)]
    assert order == h[30:] + held[::-1]


def test_checklist_09_round_robin_across_functions() -> None:
    s, _ = make()
    c, w = peer(s), peer(s)
    s.can_do(w, (b"a",))
    s.can_do(w, (b"b",))
    ha = [submit(s, c, b"a", ptype=T.SUBMIT_JOB_BG) for _ in range(2)]
    hb = [submit(s, c, b"b", ptype=T.SUBMIT_JOB_BG) for _ in range(2)]
    got = [grab(s, w)[1][0] for _ in range(4)]
    # newest function first (as gearmand), then the one that yielded goes to the back
    assert got == [hb[0], ha[0], hb[1], ha[1]]


def test_checklist_10_cant_do_and_reset_requeue_running_jobs() -> None:
    s, _ = make()
    c, w = peer(s), peer(s)
    s.can_do(w, (b"a",))
    s.can_do(w, (b"b",))
    s.can_do(w, (b"b",))  # duplicate counted twice, as in gearmand
    assert s.functions[b"b"].workers == 2
    ha = submit(s, c, b"a")
    hb = submit(s, c, b"b")
    grab(s, w)
    grab(s, w)
    assert s.functions[b"a"].running == s.functions[b"b"].running == 1
    s.cant_do(w, (b"b",))
    assert s.functions[b"b"].workers == 0
    assert s.handles[hb].worker is None and s.handles[hb].retries == 1
    s.work_complete(w, (hb, b"late"))
    assert take(w) == [(ERR, (b"JOB_NOT_FOUND", b"Job given in work result not found"))]
    s.reset_abilities(w, ())
    assert s.handles[ha].worker is None and s.handles[ha].retries == 1
    assert s.functions[b"a"].workers == 0
    assert grab(s, w)[0] == T.NO_JOB
    assert take(c) == []


def test_checklist_11_pre_sleep_wakes_one_sleeper_per_job() -> None:
    s, _ = make()
    c = peer(s)
    ws = [peer(s) for _ in range(4)]
    for w in ws:
        s.can_do(w, (b"f",))
        s.pre_sleep(w, ())
    assert all(take(w) == [] for w in ws)
    submit(s, c, b"f", ptype=T.SUBMIT_JOB_BG)
    submit(s, c, b"f", ptype=T.SUBMIT_JOB_BG)
    woken = [w for w in ws if take(w) == [(T.NOOP, ())]]
    assert len(woken) == 2
    # a woken worker is not NOOPed twice in one sleep cycle
    for w in woken:
        s.pre_sleep(w, ())  # jobs are queued -> immediate NOOP
        assert take(w) == [(T.NOOP, ())]


def test_checklist_11_worker_wakeup_n_and_all() -> None:
    s, _ = make(worker_wakeup=2)
    c = peer(s)
    ws = [peer(s) for _ in range(5)]
    for w in ws:
        s.can_do(w, (b"f",))
        s.pre_sleep(w, ())
    submit(s, c, b"f", ptype=T.SUBMIT_JOB_BG)
    assert sum(bool(take(w)) for w in ws) == 2
    s2, _ = make(worker_wakeup=0)
    c = peer(s2)
    ws = [peer(s2) for _ in range(5)]
    for w in ws:
        s2.can_do(w, (b"f",))
        s2.pre_sleep(w, ())
    submit(s2, c, b"f", ptype=T.SUBMIT_JOB_BG)
    assert sum(bool(take(w)) for w in ws) == 5


def test_checklist_11_unused_wakeup_passes_on_when_worker_leaves() -> None:
    s, _ = make()
    c, w1, w2 = peer(s), peer(s), peer(s)
    for w in (w1, w2):
        s.can_do(w, (b"f",))
        s.pre_sleep(w, ())
    submit(s, c, b"f", ptype=T.SUBMIT_JOB_BG)
    first, second = (w1, w2) if take(w1) else (w2, w1)
    assert take(second) == []
    s.disconnect(first)  # woken but never grabbed
    assert take(second) == [(T.NOOP, ())]


def test_idle_workers_of_other_functions_cost_nothing() -> None:
    s, _ = make()
    c = peer(s)
    idle = [peer(s) for _ in range(500)]
    for w in idle:
        s.can_do(w, (b"other",))
        s.pre_sleep(w, ())
    f = s.function(b"f")
    submit(s, c, b"f", ptype=T.SUBMIT_JOB_BG)
    assert not s.dirty[1:]  # only the client has output
    assert len(f.sleepers) == 0
    assert all(not w.out for w in idle)


def test_sleeper_deque_stays_bounded() -> None:
    s, _ = make()
    w = peer(s)
    s.can_do(w, (b"quiet",))
    s.can_do(w, (b"busy",))
    c = peer(s)
    for _ in range(1000):
        s.pre_sleep(w, ())
        submit(s, c, b"busy", ptype=T.SUBMIT_JOB_BG)
        take(w)
        grab(s, w)
    assert len(s.functions[b"quiet"].sleepers) <= 2 * 1 + 17


def test_checklist_12_grab_without_can_do_is_no_job() -> None:
    s, _ = make()
    c, w = peer(s), peer(s)
    submit(s, c, b"f")
    for ptype in (T.GRAB_JOB, T.GRAB_JOB_UNIQ, T.GRAB_JOB_ALL):
        assert grab(s, w, ptype) == (T.NO_JOB, ())


def test_checklist_14_exceptions_option_and_fail_quirk() -> None:
    s, _ = make()
    opted, plain, w = peer(s), peer(s), peer(s)
    s.option(opted, (b"ExCePtIoNs",))
    assert take(opted) == [(T.OPTION_RES, (b"ExCePtIoNs",))]
    s.option(plain, (b"bogus",))
    assert take(plain) == [(ERR, (b"UNKNOWN_OPTION", b"Server does not recognize given option"))]
    s.option(plain, (b"exceptions\0extra",))  # compared as a C string, echoed whole
    assert take(plain) == [(T.OPTION_RES, (b"exceptions\0extra",))]
    plain.exceptions = False
    s.can_do(w, (b"f",))
    h = submit(s, opted, b"f", b"u")
    assert submit(s, plain, b"f", b"u") == h
    grab(s, w)
    s.work_exception(w, (h, b"boom"))
    assert take(opted) == [(T.WORK_EXCEPTION, (h, b"boom"))]
    assert plain.out == [b"\0RES\x00\x00\x00\x0e" + len(h + b"\0").to_bytes(4, "big") + h + b"\0"]
    assert s.stats.finished == {(b"f", "exception"): 1}


def test_checklist_14_exceptions_default_on() -> None:
    s, _ = make(exceptions=True)
    assert peer(s).exceptions


def test_checklist_15_get_status() -> None:
    s, _ = make()
    c, w = peer(s), peer(s)
    s.can_do(w, (b"f",))
    h = submit(s, c, b"f")
    s.get_status(c, (h,))
    assert take(c) == [(T.STATUS_RES, (h, b"1", b"0", b"0", b"0"))]
    grab(s, w)
    s.work_status(w, (h, b"3", b"10"))
    take(c)
    s.get_status(c, (h,))
    assert take(c) == [(T.STATUS_RES, (h, b"1", b"1", b"3", b"10"))]
    s.get_status(c, (b"H:x:99",))
    assert take(c) == [(T.STATUS_RES, (b"H:x:99", b"0", b"0", b"0", b"0"))]
    with pytest.raises(DropPeer):
        s.get_status(c, (b"H" * 64,))


def test_checklist_16_get_status_unique_counts_clients() -> None:
    s, _ = make()
    c1, c2, c3 = peer(s), peer(s), peer(s)
    submit(s, c1, b"f", b"u")
    submit(s, c2, b"f", b"u", ptype=T.SUBMIT_JOB_HIGH)
    submit(s, c3, b"f", b"u", ptype=T.SUBMIT_JOB_BG)
    s.get_status_unique(c1, (b"u",))
    assert take(c1) == [(T.STATUS_RES_UNIQUE, (b"u", b"1", b"0", b"0", b"0", b"2"))]
    s.get_status_unique(c1, (b"nope",))
    assert take(c1) == [(T.STATUS_RES_UNIQUE, (b"nope", b"0", b"0", b"0", b"0", b"0"))]


def test_checklist_17_client_id_truncated() -> None:
    s, _ = make()
    p = peer(s)
    s.set_client_id(p, (b"i" * 200,))
    assert p.client_id == b"i" * 127


def test_checklist_18_can_do_timeout_requeues_per_job() -> None:
    s, clock = make()
    c, w, w2 = peer(s), peer(s), peer(s)
    s.can_do_timeout(w, (b"f", b"10"))  # below 1000 ms -> 1 s
    h1 = submit(s, c, b"f")
    h2 = submit(s, c, b"f")
    grab(s, w)
    clock.advance(0.5)
    grab(s, w)  # second job, own timer
    s.work_complete(w, (h2, b"ok"))  # cancels h2's timer
    clock.advance(0.6)  # h1's timer (1 s) fires, h2's would have at 1.5 s
    assert s.handles[h1].worker is None and s.handles[h1].retries == 1
    assert not [t for t in clock.pending()]
    s.work_complete(w, (h1, b"late"))
    assert (ERR, (b"JOB_NOT_FOUND", b"Job given in work result not found")) in take(w)
    s.can_do(w2, (b"f",))
    assert grab(s, w2)[1][0] == h1
    clock.advance(5)
    assert s.handles[h1].worker is w2  # plain CAN_DO: no timer


def test_checklist_18_non_numeric_timeout_means_none() -> None:
    s, clock = make()
    c, w = peer(s), peer(s)
    s.can_do_timeout(w, (b"f", b"abc"))
    h = submit(s, c, b"f")
    grab(s, w)
    clock.advance(10)
    assert s.handles[h].worker is w


@pytest.mark.parametrize(("retries", "losses_until_fail"), [(-1, None), (0, 1), (1, 2), (2, 3)])
def test_checklist_19_job_retries(retries: int, losses_until_fail: int | None) -> None:
    done: list[StoredJob] = []
    s, _ = make(job_retries=retries, store_done=done.append)
    c = peer(s)
    h = submit(s, c, b"f")
    record = StoredJob(b"f", b"", b"x")
    s.handles[h].stored = record
    for loss in range(1, 6):
        w = peer(s)
        s.can_do(w, (b"f",))
        assert grab(s, w)[1][0] == h
        s.disconnect(w)
        if losses_until_fail is not None and loss == losses_until_fail:
            assert take(c) == [(T.WORK_FAIL, (h,))]
            assert h not in s.handles
            assert done == [record]
            assert s.stats.finished == {(b"f", "fail"): 1}
            return
        assert take(c) == []
        assert s.handles[h].retries == loss
    assert losses_until_fail is None


def test_checklist_20_client_disconnect_ignores_job() -> None:
    done: list[StoredJob] = []
    s, _ = make(store_done=done.append)
    c, c2, w = peer(s), peer(s), peer(s)
    s.can_do(w, (b"f",))
    running = submit(s, c, b"f", b"r")
    queued = submit(s, c, b"f", b"q")
    # a stored background job that a foreground client coalesced onto
    bg = submit(s, c2, b"f", b"b", ptype=T.SUBMIT_JOB_BG)
    record = StoredJob(b"f", b"b", b"x")
    s.handles[bg].stored = record
    assert submit(s, c, b"f", b"b") == bg
    assert grab(s, w)[1][0] == running
    s.disconnect(c)
    assert s.handles[running].ignore  # still running; its results will be discarded
    assert s.handles[queued].ignore and s.handles[bg].ignore
    assert not s.handles[bg].queued_flag  # "show jobs" QUEUED 0, as gearmand
    assert done == [record]  # the store row is removed (gearmand 1.1.20 leaks it)
    assert s.functions[b"f"].total == 3  # still counted until reaped
    assert grab(s, w) == (T.NO_JOB, ())  # both ignored queued jobs are dropped
    assert s.functions[b"f"].total == 1
    s.work_complete(w, (running, b"r"))  # the worker finishes; nobody hears
    assert take(w) == [] and s.functions[b"f"].total == 0
    # the unique is free for a new job
    assert submit(s, c2, b"f", b"b", ptype=T.SUBMIT_JOB_BG) != bg


def test_checklist_21_epoch_job_waits_then_wakes_sleeper() -> None:
    s, clock = make()
    c, w = peer(s), peer(s)
    s.can_do(w, (b"f",))
    when = int(clock.now) + 30
    s.submit_epoch(c, (b"f", b"", str(when).encode(), b"later"))
    ((_, (h,)),) = take(c)
    s.submit_epoch(c, (b"f", b"", b"garbage", b"now"))  # strtoll -> 0 -> runs now
    ((_, (h_now,)),) = take(c)
    assert s.functions[b"f"].queued(1) == 2
    assert grab(s, w)[1][0] == h_now
    assert grab(s, w) == (T.NO_JOB, ())
    s.pre_sleep(w, ())
    assert take(w) == []
    clock.advance(29)
    assert take(w) == []
    clock.advance(1.5)
    assert take(w) == [(T.NOOP, ())]
    assert grab(s, w)[1] == (h, b"f", b"later")


def test_checklist_22_unsupported_commands() -> None:
    s, _ = make()
    c = peer(s)
    for ptype in (T.SUBMIT_JOB_SCHED, T.ALL_YOURS, T.NOOP, T.JOB_CREATED, T.ECHO_RES, T.UNUSED):
        s.dispatch[ptype](c, ())
        assert take(c) == [(ERR, (b"INVALID_COMMAND", b"Command not expected"))]


def test_checklist_23_reduce_job_fields() -> None:
    s, _ = make()
    c, w = peer(s), peer(s)
    s.can_do(w, (b"f",))
    s.dispatch[T.SUBMIT_REDUCE_JOB](c, (b"f", b"u", b"red", b"agg", b"data\0x"))
    ((_, (h,)),) = take(c)
    assert grab(s, w, T.GRAB_JOB_ALL) == (T.JOB_ASSIGN_ALL, (h, b"f", b"u", b"red", b"data\0x"))


def test_checklist_24_maxqueue_after_coalescing() -> None:
    s, _ = make()
    c = peer(s)
    f = s.function(b"mq")
    f.maxqueue = [0, 2, 1]
    submit(s, c, b"mq", b"a", ptype=T.SUBMIT_JOB_BG)
    submit(s, c, b"mq", b"b", ptype=T.SUBMIT_JOB_BG)
    s.dispatch[T.SUBMIT_JOB_BG](c, (b"mq", b"c", b"x"))
    assert take(c) == [(ERR, (b"QUEUE_ERROR", b"Job queue is full"))]
    submit(s, c, b"mq", b"a", ptype=T.SUBMIT_JOB_BG)  # duplicate accepted
    submit(s, c, b"mq", b"h", ptype=T.SUBMIT_JOB_HIGH_BG)  # high unlimited
    s.dispatch[T.SUBMIT_JOB_LOW](c, (b"mq", b"", b"x"))
    assert take(c) == [(ERR, (b"QUEUE_ERROR", b"Job queue is full"))]


def test_cancel_fails_clients_and_drops_job() -> None:
    done: list[StoredJob] = []
    s, _ = make(store_done=done.append)
    c, w = peer(s), peer(s)
    h = submit(s, c, b"f", b"u")
    rec = StoredJob(b"f", b"u", b"x")
    s.handles[h].stored = rec
    assert s.cancel(h)
    assert take(c) == [(T.WORK_FAIL, (h,))]
    assert done == [rec]
    assert not s.handles[h].queued_flag  # "show jobs" QUEUED column drops to 0
    assert s.cancel(h)  # still listed, still cancellable
    assert not s.cancel(b"H:none:1")
    s.can_do(w, (b"f",))
    assert grab(s, w) == (T.NO_JOB, ())
    assert not s.handles


def test_store_done_on_each_result() -> None:
    done: list[StoredJob] = []
    s, _ = make(store_done=done.append)
    c, w = peer(s), peer(s)
    s.can_do(w, (b"f",))
    records = []
    for result in (T.WORK_COMPLETE, T.WORK_FAIL, T.WORK_EXCEPTION):
        h = submit(s, c, b"f", ptype=T.SUBMIT_JOB_BG)
        rec = StoredJob(b"f", b"", b"x")
        s.handles[h].stored = rec
        records.append(rec)
        grab(s, w)
        s.dispatch[result](w, (h,) if result == T.WORK_FAIL else (h, b"r"))
    assert done == records
    assert s.stats.finished == {
        (b"f", "complete"): 1,
        (b"f", "fail"): 1,
        (b"f", "exception"): 1,
    }
    assert s.stats.submitted == {b"f": 3}


def test_work_fail_handle_too_large() -> None:
    s, _ = make()
    w = peer(s)
    s.work_fail(w, (b"H" * 64,))
    assert take(w) == [
        (
            ERR,
            (
                b"ARGUMENT_TOO_LARGE",
                b"Error occurred due to GEARMAND_JOB_HANDLE_SIZE being too small from snprintf",
            ),
        )
    ]


def test_replay_creates_queued_background_jobs() -> None:
    s, clock = make()
    w = peer(s)
    s.can_do(w, (b"f",))
    s.replay(StoredJob(b"f", b"u1", b"d1", priority=2))
    s.replay(StoredJob(b"f", b"u2", b"d2", priority=0))
    s.replay(StoredJob(b"f", b"u3", b"d3", when=int(clock.now) + 100))
    assert grab(s, w, T.GRAB_JOB_UNIQ)[1][2] == b"u2"
    assert grab(s, w, T.GRAB_JOB_UNIQ)[1][2] == b"u1"
    assert grab(s, w) == (T.NO_JOB, ())
    assert [j.background for j in s.handles.values()] == [True, True, True]
