"""ClientProtocol and WorkerProtocol driven with byte vectors (no sockets)."""

from __future__ import annotations

import pytest

from gearshift.errors import (
    LocalProtocolError,
    QueueFull,
    RemoteProtocolError,
    UnknownJob,
    UnknownOption,
)
from gearshift.protocol.client import (
    ClientProtocol,
    EchoReply,
    JobCreated,
    JobStatus,
    OptionAccepted,
    RequestFailed,
    RequestKind,
    ServerErrorReceived,
    StatusReply,
    WorkUpdate,
)
from gearshift.protocol.codec import encode_response
from gearshift.protocol.packets import PacketType, Priority
from gearshift.protocol.worker import (
    GrabState,
    JobAssigned,
    NoJob,
    Noop,
    WorkerErrorReceived,
    WorkerProtocol,
)

P = PacketType


def res(ptype: int, *args: bytes) -> bytes:
    return encode_response(ptype, *args)


# -- client: what goes out ----------------------------------------------------------


@pytest.mark.parametrize(
    ("priority", "background", "number"),
    [
        (Priority.NORMAL, False, 7),
        (Priority.HIGH, False, 21),
        (Priority.LOW, False, 33),
        (Priority.NORMAL, True, 18),
        (Priority.HIGH, True, 32),
        (Priority.LOW, True, 34),
    ],
)
def test_submit_packet_bytes(priority: Priority, background: bool, number: int) -> None:
    out = ClientProtocol().submit(
        b"rev", b"hello", unique=b"u1", priority=priority, background=background
    )
    body = b"rev\0u1\0hello"
    assert out == b"\0REQ" + number.to_bytes(4, "big") + len(body).to_bytes(4, "big") + body


def test_epoch_submit_and_its_limits() -> None:
    proto = ClientProtocol()
    out = proto.submit(b"f", b"d", unique=b"u", background=True, when=1700000000)
    assert out == b"\0REQ\x00\x00\x00\x24\x00\x00\x00\x10f\0u\x001700000000\0d"
    with pytest.raises(LocalProtocolError):
        proto.submit(b"f", b"d", when=1)  # foreground
    with pytest.raises(LocalProtocolError):
        proto.submit(b"f", b"d", background=True, priority=Priority.HIGH, when=1)


def test_bad_arguments_are_refused_locally() -> None:
    proto = ClientProtocol()
    with pytest.raises(LocalProtocolError):
        proto.submit(b"f\0g", b"")
    with pytest.raises(LocalProtocolError):
        proto.submit(b"", b"")
    with pytest.raises(LocalProtocolError):
        proto.submit(b"f", b"", unique=b"u" * 65)
    proto.submit(b"f", b"", unique=b"u" * 64)  # exactly 64 is allowed
    proto.submit(b"f" * 8191, b"")  # the longest name a server takes
    with pytest.raises(LocalProtocolError, match="8191"):
        proto.submit(b"f" * 8192, b"")
    worker = WorkerProtocol()
    worker.can_do(b"w" * 8191)
    with pytest.raises(LocalProtocolError, match="8191"):
        worker.can_do(b"w" * 8192)
    with pytest.raises(LocalProtocolError):
        proto.get_status(b"H:\0")
    with pytest.raises(LocalProtocolError):
        proto.set_client_id(b"a\0b")


def test_other_requests_bytes() -> None:
    proto = ClientProtocol()
    assert proto.get_status(b"H:x:1") == b"\0REQ\0\0\0\x0f\0\0\0\x05H:x:1"
    assert proto.get_status_unique(b"u") == b"\0REQ\0\0\0\x29\0\0\0\x01u"
    assert proto.echo(b"ping") == b"\0REQ\0\0\0\x10\0\0\0\x04ping"
    assert proto.option(b"exceptions") == b"\0REQ\0\0\0\x1a\0\0\0\x0aexceptions"
    assert proto.set_client_id(b"me") == b"\0REQ\0\0\0\x16\0\0\0\x02me"


# -- client: what comes back --------------------------------------------------------


def test_job_created_in_submit_order_then_results_by_handle() -> None:
    proto = ClientProtocol()
    proto.submit(b"f", b"1", tag="a")
    proto.submit(b"f", b"2", tag="b", background=True)
    proto.submit(b"f", b"3", tag="c")
    events = proto.receive_data(
        res(P.JOB_CREATED, b"H:x:1") + res(P.JOB_CREATED, b"H:x:2") + res(P.JOB_CREATED, b"H:x:3")
    )
    assert events == [
        JobCreated("a", b"H:x:1", False),
        JobCreated("b", b"H:x:2", True),
        JobCreated("c", b"H:x:3", False),
    ]
    assert sorted(proto.active_handles) == [b"H:x:1", b"H:x:3"]
    stream = (
        res(P.WORK_DATA, b"H:x:3", b"part\0with nul")
        + res(P.WORK_WARNING, b"H:x:3", b"careful")
        + res(P.WORK_STATUS, b"H:x:3", b"1", b"2")
        + res(P.WORK_COMPLETE, b"H:x:3", b"done")
        + res(P.WORK_EXCEPTION, b"H:x:1", b"ValueError: boom")
    )
    # Fed one byte at a time: the decoder must reassemble.
    events = [e for i in range(len(stream)) for e in proto.receive_data(stream[i : i + 1])]
    assert events == [
        WorkUpdate(P.WORK_DATA, b"H:x:3", b"part\0with nul"),
        WorkUpdate(P.WORK_WARNING, b"H:x:3", b"careful"),
        WorkUpdate(P.WORK_STATUS, b"H:x:3", b"", 1, 2),
        WorkUpdate(P.WORK_COMPLETE, b"H:x:3", b"done"),
        WorkUpdate(P.WORK_EXCEPTION, b"H:x:1", b"ValueError: boom"),
    ]
    assert events[3].final and not events[0].final
    assert proto.active_handles == [] and proto.idle


def test_gearmand_work_fail_with_trailing_nul() -> None:
    proto = ClientProtocol()
    proto.submit(b"f", b"", tag=1)
    proto.receive_data(res(P.JOB_CREATED, b"H:vm:3"))
    [event] = proto.receive_data(res(P.WORK_FAIL, b"H:vm:3\0"))
    assert event == WorkUpdate(P.WORK_FAIL, b"H:vm:3")
    assert proto.idle


def test_replies_matched_per_kind_and_by_key() -> None:
    proto = ClientProtocol()
    proto.echo(b"e1", tag="echo1")
    proto.get_status(b"H:x:1", tag="st1")
    proto.get_status(b"H:x:2", tag="st2")
    proto.get_status_unique(b"uq", tag="su")
    proto.option(b"exceptions", tag="opt")
    proto.submit(b"f", b"", tag="sub", background=True)
    events = proto.receive_data(
        res(P.STATUS_RES, b"H:x:2", b"1", b"1", b"3", b"4")
        + res(P.JOB_CREATED, b"H:x:9")
        + res(P.ECHO_RES, b"e1")
        + res(P.STATUS_RES, b"H:x:1", b"0", b"0", b"0", b"0")
        + res(P.STATUS_RES_UNIQUE, b"uq", b"1", b"0", b"0", b"0", b"2")
        + res(P.OPTION_RES, b"exceptions")
    )
    assert events == [
        StatusReply("st2", JobStatus("H:x:2", None, True, True, 3, 4)),
        JobCreated("sub", b"H:x:9", True),
        EchoReply("echo1", b"e1"),
        StatusReply("st1", JobStatus("H:x:1", None, False, False, 0, 0)),
        StatusReply("su", JobStatus(None, "uq", True, False, 0, 0, 2)),
        OptionAccepted("opt", b"exceptions"),
    ]
    assert proto.idle


def test_error_answers_oldest_pending_request() -> None:
    proto = ClientProtocol()
    proto.option(b"bogus", tag="opt")
    proto.submit(b"f", b"", tag="sub", background=True)
    proto.submit(b"f", b"", tag="sub2", background=True)
    events = proto.receive_data(
        res(P.ERROR, b"UNKNOWN_OPTION", b"Server does not recognize given option")
        + res(P.ERROR, b"QUEUE_ERROR", b"Job queue is full")
        + res(P.JOB_CREATED, b"H:x:5")
        + res(P.ERROR, b"JOB_NOT_FOUND", b"Job given in work result not found")
    )
    assert isinstance(events[0], RequestFailed) and events[0].tag == "opt"
    assert isinstance(events[0].error, UnknownOption) and events[0].kind is RequestKind.OPTION
    assert isinstance(events[1], RequestFailed) and events[1].tag == "sub"
    assert isinstance(events[1].error, QueueFull)
    assert events[2] == JobCreated("sub2", b"H:x:5", True)
    assert isinstance(events[3], ServerErrorReceived) and isinstance(events[3].error, UnknownJob)


def test_coalesced_submits_share_a_handle() -> None:
    proto = ClientProtocol()
    proto.submit(b"f", b"", unique=b"same", tag=1)
    proto.submit(b"f", b"", unique=b"same", tag=2)
    proto.receive_data(res(P.JOB_CREATED, b"H:x:1") * 2)
    assert proto.active_handles == [b"H:x:1"]
    proto.forget(b"H:x:1")
    assert proto.active_handles == [b"H:x:1"]
    proto.receive_data(res(P.WORK_COMPLETE, b"H:x:1", b""))
    assert proto.idle


@pytest.mark.parametrize(
    "data",
    [
        encode_response(P.JOB_CREATED, b"H:x:1"),  # nothing submitted
        encode_response(P.ECHO_RES, b"x"),
        encode_response(P.NOOP),  # a worker packet
        encode_response(P.JOB_ASSIGN, b"H", b"f", b""),
        b"\0REQ\0\0\0\x10\0\0\0\0",  # request magic
        b"\0BAD\0\0\0\x10\0\0\0\0",
        b"OK\r\n",  # text on a binary connection
    ],
)
def test_unexpected_input_is_a_remote_protocol_error(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        ClientProtocol().receive_data(data)


def test_connection_lost_reports_pending_and_active() -> None:
    proto = ClientProtocol()
    proto.submit(b"f", b"", tag="created")
    proto.receive_data(res(P.JOB_CREATED, b"H:x:1"))
    proto.submit(b"f", b"", tag="unanswered")
    proto.echo(b"", tag="echo")
    assert proto.connection_lost() == (["unanswered", "echo"], [b"H:x:1"])
    with pytest.raises(LocalProtocolError):
        proto.echo(b"")


# -- worker ---------------------------------------------------------------------------


def test_worker_registration_bytes() -> None:
    w = WorkerProtocol()
    assert w.set_client_id(b"w1") == b"\0REQ\0\0\0\x16\0\0\0\x02w1"
    assert w.can_do(b"rev") == b"\0REQ\0\0\0\x01\0\0\0\x03rev"
    assert w.can_do(b"rev", 2500) == b"\0REQ\0\0\0\x17\0\0\0\x08rev\x002500"
    assert w.cant_do(b"rev") == b"\0REQ\0\0\0\x02\0\0\0\x03rev"
    assert w.reset_abilities() == b"\0REQ\0\0\0\x03\0\0\0\0"
    with pytest.raises(LocalProtocolError):
        w.can_do(b"")
    with pytest.raises(ValueError):
        WorkerProtocol(grab="sometimes")


@pytest.mark.parametrize(("grab", "number"), [("plain", 9), ("uniq", 30), ("all", 39)])
def test_grab_flavours(grab: str, number: int) -> None:
    assert WorkerProtocol(grab=grab).grab() == b"\0REQ" + number.to_bytes(4, "big") + bytes(4)


def test_grab_sleep_wake_cycle_follows_the_table() -> None:
    w = WorkerProtocol()
    w.grab()
    assert w.state is GrabState.GRABBING
    with pytest.raises(LocalProtocolError):
        w.grab()  # one GRAB in flight at a time
    with pytest.raises(LocalProtocolError):
        w.pre_sleep()
    assert w.receive_data(res(P.NO_JOB)) == [NoJob()]
    assert w.pre_sleep() == b"\0REQ\0\0\0\x04\0\0\0\0"
    assert w.state is GrabState.SLEEPING
    assert w.receive_data(res(P.NOOP)) == [Noop()]
    assert w.state is GrabState.IDLE
    assert w.receive_data(res(P.NOOP)) == [Noop()]  # a stray NOOP is harmless
    w.grab()
    [job] = w.receive_data(res(P.JOB_ASSIGN_UNIQ, b"H:x:1", b"rev", b"u1", b"da\0ta"))
    assert job == JobAssigned(b"H:x:1", b"rev", b"u1", b"da\0ta")
    assert w.assigned == {b"H:x:1"} and w.state is GrabState.IDLE


def test_out_of_turn_assign_is_remote_error() -> None:
    with pytest.raises(RemoteProtocolError):
        WorkerProtocol().receive_data(res(P.JOB_ASSIGN, b"H:x:1", b"f", b""))
    with pytest.raises(RemoteProtocolError):
        WorkerProtocol().receive_data(res(P.NO_JOB))
    with pytest.raises(RemoteProtocolError):
        WorkerProtocol().receive_data(res(P.JOB_CREATED, b"H"))


def test_assign_variants() -> None:
    w = WorkerProtocol(grab="plain")
    w.grab()
    assert w.receive_data(res(P.JOB_ASSIGN, b"H:1", b"f", b"d")) == [
        JobAssigned(b"H:1", b"f", b"", b"d")
    ]
    w = WorkerProtocol(grab="all")
    w.grab()
    assert w.receive_data(res(P.JOB_ASSIGN_ALL, b"H:2", b"f", b"u", b"red", b"d")) == [
        JobAssigned(b"H:2", b"f", b"u", b"d", b"red")
    ]


def test_results_only_for_assigned_jobs() -> None:
    w = WorkerProtocol()
    with pytest.raises(LocalProtocolError):
        w.work_complete(b"H:x:1", b"")
    w.grab()
    w.receive_data(res(P.JOB_ASSIGN_UNIQ, b"H:x:1", b"f", b"", b""))
    assert w.work_data(b"H:x:1", b"d") == b"\0REQ\0\0\0\x1c\0\0\0\x07H:x:1\0d"
    assert w.work_warning(b"H:x:1", b"w") == b"\0REQ\0\0\0\x1d\0\0\0\x07H:x:1\0w"
    assert w.work_status(b"H:x:1", 1, 10) == b"\0REQ\0\0\0\x0c\0\0\0\x0aH:x:1\x001\x0010"
    assert w.work_exception(b"H:x:1", b"E") == b"\0REQ\0\0\0\x19\0\0\0\x07H:x:1\0E"
    with pytest.raises(LocalProtocolError):
        w.work_fail(b"H:x:1")  # already finished
    for final in (
        lambda h: w.work_complete(h, b"r"),
        w.work_fail,
    ):
        w.grab()
        w.receive_data(res(P.JOB_ASSIGN_UNIQ, b"H:x:2", b"f", b"", b""))
        final(b"H:x:2")
        assert not w.assigned


def test_worker_echo_option_and_errors() -> None:
    w = WorkerProtocol()
    w.echo(b"hi", tag="e")
    w.option(b"bogus", tag="o")
    events = w.receive_data(
        res(P.ECHO_RES, b"hi")
        + res(P.ERROR, b"UNKNOWN_OPTION", b"nope")
        + res(P.ERROR, b"JOB_NOT_FOUND", b"Job given in work result not found")
    )
    assert events[0] == EchoReply("e", b"hi")
    assert isinstance(events[1], RequestFailed) and events[1].tag == "o"
    assert isinstance(events[2], WorkerErrorReceived) and isinstance(events[2].error, UnknownJob)
    w.option(b"exceptions", tag="ok")
    assert w.receive_data(res(P.OPTION_RES, b"exceptions")) == [OptionAccepted("ok", b"exceptions")]


def test_worker_connection_lost() -> None:
    w = WorkerProtocol()
    w.grab()
    w.receive_data(res(P.JOB_ASSIGN_UNIQ, b"H:x:1", b"f", b"", b""))
    assert w.connection_lost() == [b"H:x:1"]
    with pytest.raises(LocalProtocolError):
        w.grab()


def test_status_reply_for_an_unasked_handle_answers_the_oldest() -> None:
    proto = ClientProtocol()
    proto.get_status(b"H:x:1", tag="a")
    proto.get_status(b"H:x:2", tag="b")
    # Replies out of order, one naming nothing we asked; numbers that are not numbers read 0.
    events = proto.receive_data(
        res(P.STATUS_RES, b"H:x:2", b"1", b"0", b"x", b"7")
        + res(P.STATUS_RES, b"H:other", b"0", b"0", b"0", b"0")
    )
    assert events == [
        StatusReply("b", JobStatus("H:x:2", None, True, False, 0, 7)),
        StatusReply("a", JobStatus("H:other", None, False, False, 0, 0)),
    ]
    assert proto.idle
    proto.connection_lost()
    with pytest.raises(LocalProtocolError):
        proto.set_client_id(b"late")


def test_worker_refuses_bad_names_and_unexpected_packets() -> None:
    w = WorkerProtocol()
    with pytest.raises(LocalProtocolError):
        w.can_do(b"a\0b")
    with pytest.raises(RemoteProtocolError):
        w.receive_data(b"\0REQ\0\0\0\x06\0\0\0\0")  # a request-magic NOOP
    with pytest.raises(RemoteProtocolError):
        WorkerProtocol().receive_data(res(P.ECHO_RES, b"unasked"))
    w = WorkerProtocol()
    w.option(b"exceptions", tag="o")
    w.echo(b"e", tag="e")
    # The echo reply skips the pending option request.
    assert w.receive_data(res(P.ECHO_RES, b"e")) == [EchoReply("e", b"e")]


def test_worker_grab_carries_its_tag_and_is_pending_until_answered() -> None:
    w = WorkerProtocol()
    w.echo(b"e", tag="echo")
    w.grab(tag="first")
    assert w.pending_tags == ["echo", "first"]
    [none] = w.receive_data(res(P.NO_JOB))
    assert none == NoJob() and none.tag == "first"
    assert w.pending_tags == ["echo"]
    w.grab(tag="second")
    [job] = w.receive_data(res(P.JOB_ASSIGN_UNIQ, b"H:x:1", b"f", b"u", b"d"))
    assert isinstance(job, JobAssigned) and job.tag == "second"
    assert job == JobAssigned(b"H:x:1", b"f", b"u", b"d")  # the tag is not part of equality
    w.grab(tag="lost")
    assert w.pending_tags == ["echo", "lost"]
    w.connection_lost()
    assert w.pending_tags == []
