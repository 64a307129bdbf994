"""Admin reply parsing, from the exact bytes gearmand 1.1.20 writes (PROTOCOL.md section 2)."""

from __future__ import annotations

import pytest

from gearshift.errors import (
    InvalidArguments,
    InvalidCommand,
    LocalProtocolError,
    RemoteProtocolError,
    ServerError,
    UnknownJob,
)
from gearshift.protocol.adminreplies import (
    AdminProtocol,
    AdminReply,
    AdminReplyReader,
    FunctionStatus,
    JobInfo,
    PriorityStatus,
    WorkerInfo,
    check_ok,
    check_token,
    expects_list,
    maxqueue_command,
    parse_error,
    parse_priority_status,
    parse_show_jobs,
    parse_show_unique_jobs,
    parse_status,
    parse_workers,
    sum_by_name,
)


def _one(command: str, data: bytes) -> list[str]:
    reader = AdminReplyReader()
    reader.expect(command)
    replies = reader.feed(data)
    assert len(replies) == 1 and reader.pending == 0
    return replies[0]


def test_status_rows_and_queued_property() -> None:
    lines = _one("status", b"co\t3\t1\t2\nidle\t0\t0\t0\n.\n")
    assert parse_status(lines) == [FunctionStatus("co", 3, 1, 2), FunctionStatus("idle", 0, 0, 0)]
    assert parse_status(lines)[0].queued == 2


def test_crlf_and_split_feeds() -> None:
    reader = AdminReplyReader()
    reader.expect("status")
    reader.expect("version")
    data = b"f\t1\t0\t1\r\n.\r\nOK 1.1.20+ds\r\n"
    out: list[list[str]] = []
    for i in range(len(data)):
        out.extend(reader.feed(data[i : i + 1]))
    assert out == [["f\t1\t0\t1"], ["OK 1.1.20+ds"]]
    assert check_ok(out[1]) == "1.1.20+ds"


def test_empty_list_reply() -> None:
    assert parse_status(_one("status", b".\n")) == []


def test_priority_status() -> None:
    rows = parse_priority_status(_one("prioritystatus", b"pr\t2\t2\t2\t0\n.\n"))
    assert rows == [PriorityStatus("pr", 2, 2, 2, 0)]


def test_workers_with_and_without_functions() -> None:
    lines = _one(
        "workers",
        b"38 127.0.0.1 worker-1 : co rev\n42 127.0.0.1 - :\n7 ::1 - : x\n.\n",
    )
    assert parse_workers(lines) == [
        WorkerInfo(38, "127.0.0.1", "worker-1", ("co", "rev")),
        WorkerInfo(42, "127.0.0.1", None, ()),
        WorkerInfo(7, "::1", None, ("x",)),
    ]


def test_show_jobs_and_unique_jobs() -> None:
    assert parse_show_jobs(_one("show jobs", b"H:vm:2\t0\t0\t1\nH:vm:3\t2\t1\t0\n.\n")) == [
        JobInfo("H:vm:2", 0, False, True),
        JobInfo("H:vm:3", 2, True, False),
    ]
    # Empty unique ids print as empty lines and must survive.
    assert parse_show_unique_jobs(_one("show unique jobs", b"abc\n\nxyz\n.\n")) == [
        "abc",
        "",
        "xyz",
    ]


def test_single_line_replies() -> None:
    assert check_ok(_one("getpid", b"OK 14011\n")) == "14011"
    assert check_ok(_one("cancel job H:x:1", b"OK\r\n")) == ""
    # The Perl server's version is a bare value.
    assert check_ok(_one("version", b"1.11\n")) == "1.11"


def test_unknown_command_decides_by_first_line() -> None:
    assert expects_list("frobnicate") is None
    assert _one("frobnicate", b"ERR UNKNOWN_COMMAND Unknown+server+commandfrobnicate\r\n") == [
        "ERR UNKNOWN_COMMAND Unknown+server+commandfrobnicate"
    ]
    # Perl Gearman::Server's "jobs" is a list.
    assert _one("jobs", b"a\t1\n.\n") == ["a\t1"]
    assert _one("gladiator", b"x\ny\n.\n") == ["x", "y"]


def test_err_lines_map_to_server_errors() -> None:
    with pytest.raises(UnknownJob):
        check_ok(["ERR UNKNOWN_JOB"])
    err = parse_error("ERR UNKNOWN_COMMAND Unknown+server+commandshutdown")
    assert isinstance(err, InvalidCommand)
    assert err.code == "UNKNOWN_COMMAND" and err.text == "Unknown server commandshutdown"
    assert isinstance(parse_error("ERR INVALID_ARGUMENTS An+incomplete+set"), InvalidArguments)
    plain = parse_error("ERR function not found")
    assert type(plain) is ServerError and plain.text == "function not found"
    # A list command answered with ERR raises instead of returning no rows.
    with pytest.raises(InvalidCommand):
        parse_status(["ERR UNKNOWN_COMMAND x"])


def test_malformed_rows_are_skipped() -> None:
    assert parse_status(["garbage", "f\t1\t0\t1"]) == [FunctionStatus("f", 1, 0, 1)]
    assert parse_workers(["nonsense", "1 2"]) == []


def test_reader_rejects_unrequested_data_and_long_lines() -> None:
    with pytest.raises(ValueError):
        AdminReplyReader().feed(b"OK\n")
    reader = AdminReplyReader(max_line=10)
    reader.expect("status")
    with pytest.raises(ValueError):
        reader.feed(b"x" * 11)


def test_rendering_helpers() -> None:
    assert maxqueue_command("f", None) == "maxqueue f"
    assert maxqueue_command("f", 5) == "maxqueue f 5"
    assert maxqueue_command("f", (1, 2, 3)) == "maxqueue f 1 2 3"
    with pytest.raises(ValueError):
        check_token("two words", "function")
    with pytest.raises(ValueError):
        check_token("", "function")


def test_list_command_refused_with_err_does_not_hang() -> None:
    reader = AdminReplyReader()
    reader.expect("prioritystatus")
    reader.expect("show jobs")
    reader.expect("status")
    data = b"ERR UNKNOWN_COMMAND Unknown+server+commandprioritystatus\r\nERR x\r\n"
    assert reader.feed(data) == [
        ["ERR UNKNOWN_COMMAND Unknown+server+commandprioritystatus"],
        ["ERR x"],
    ]
    # A function row that happens to start with "OK" is still a row of the list.
    assert reader.feed(b"OK 1\t0\t0\t0\n.\n") == [["OK 1\t0\t0\t0"]]


def test_short_and_odd_rows() -> None:
    assert expects_list("") is False
    assert parse_priority_status(["f\t1\t2"]) == []
    assert parse_show_jobs(["H:1\t0"]) == []
    # No " : " separator and no trailing " :": everything after the colon is functions.
    assert parse_workers(["12 127.0.0.1 id:f", "1 2 : f"]) == [
        WorkerInfo(12, "127.0.0.1", "id", ("f",))
    ]
    assert check_token("name", "function") == "name"


def test_admin_protocol_tags_each_reply_with_its_command() -> None:
    admin = AdminProtocol()
    assert admin.command("status", tag="s") == b"status\r\n"
    assert admin.command("version", tag="v") == b"version\r\n"
    assert admin.pending_tags == ["s", "v"]
    assert admin.receive_data(b"f\t1\t0\t1\n") == []  # a list reply is not complete yet
    assert admin.receive_data(b".\nOK 1.1.20\n") == [
        AdminReply("s", ["f\t1\t0\t1"]),
        AdminReply("v", ["OK 1.1.20"]),
    ]
    assert admin.pending_tags == []
    with pytest.raises(ValueError):
        admin.command("status\nshutdown")
    admin.command("getpid", tag="g")
    assert admin.connection_lost() == ["g"]
    with pytest.raises(LocalProtocolError):
        admin.command("status")


def test_admin_protocol_refuses_what_nobody_asked_for() -> None:
    with pytest.raises(RemoteProtocolError):
        AdminProtocol().receive_data(b"OK\n")
    admin = AdminProtocol(max_line=10)
    admin.command("status")
    with pytest.raises(RemoteProtocolError):
        admin.receive_data(b"x" * 11)


def test_sum_by_name_adds_servers_rows_up_in_first_seen_order() -> None:
    one = [FunctionStatus("b", 1, 0, 1), FunctionStatus("a", 2, 1, 1)]
    two = [FunctionStatus("a", 3, 0, 2), FunctionStatus("c", 0, 0, 1)]
    assert sum_by_name([one, two]) == [
        FunctionStatus("b", 1, 0, 1),
        FunctionStatus("a", 5, 1, 3),
        FunctionStatus("c", 0, 0, 1),
    ]
    assert sum_by_name([[PriorityStatus("p", 1, 2, 3, 1)]] * 2) == [PriorityStatus("p", 2, 4, 6, 2)]
