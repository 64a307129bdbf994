"""The differential conversations: every packet type and every admin command.

Each conversation is data (see ``harness``): the same steps are played against
``/usr/sbin/gearmand`` 1.1.20 and against gearshift, and the normalised transcripts
are compared.  Connection names: ``c``/``c2`` clients, ``w``/``w2`` workers, ``a`` an
admin connection, ``x`` a connection used for bad input.

Conversations where gearshift deliberately behaves differently are listed by name in
``test_differential.DELIBERATE_DIFFERENCES`` with the reason and gearshift's expected
transcript.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from gearshift.protocol import PacketType as P
from tests.interop.harness import (
    Admin,
    Close,
    Conversation,
    ExpectClose,
    Quiet,
    Recv,
    Send,
    Sleep,
    Step,
    Sync,
    admin,
    raw,
    req,
)

RES = b"\0RES"
REQ = b"\0REQ"


def steps(*parts: Step | Iterable[Step]) -> tuple[Step, ...]:
    out: list[Step] = []
    for p in parts:
        if isinstance(p, Iterable):
            out.extend(p)
        else:
            out.append(p)
    return tuple(out)


def submit(conn: str, ptype: int, func: bytes, uniq: bytes, data: bytes) -> tuple[Step, ...]:
    """Submit and read the one reply (JOB_CREATED or ERROR)."""
    return (Send(conn, req(ptype, func, uniq, data)), Recv(conn))


def can_do(conn: str, *funcs: bytes) -> tuple[Step, ...]:
    return tuple(Send(conn, req(P.CAN_DO, f)) for f in funcs)


def grab(conn: str, ptype: int = P.GRAB_JOB) -> tuple[Step, ...]:
    return (Send(conn, req(ptype)), Recv(conn))


def status(conn: str = "a") -> Admin:
    return Admin(conn, admin("status"))


def show_jobs(conn: str = "a") -> Admin:
    return Admin(conn, admin("show jobs"))


def conv(
    name: str, *parts: Step | Iterable[Step], args: tuple[str, ...] = (), doc: str = ""
) -> Conversation:
    return Conversation(name=name, steps=steps(*parts), server_args=args, doc=doc)


# Handles that appear in the scripts are the first, second ... job of a fresh server;
# the normaliser maps whatever prefix the server uses.  Scripts that must *send* a
# handle learn it from JOB_CREATED, which a static script cannot, so they send the
# handle both servers give their first job on this host.
def _first_handles() -> list[bytes]:
    import socket

    host = socket.gethostname().encode()
    return [b"H:" + host + b":%d" % n for n in range(1, 10)]


H = _first_handles()


def _epoch(delta: int) -> bytes:
    return str(int(time.time()) + delta).encode()


# --- framing & bad input

FRAMING = [
    conv(
        "framing_bad_magic_closes",
        Sync("x"),
        Send("x", raw(b"\0XYZ", P.ECHO_REQ, b"hi")),
        ExpectClose("x"),
        Sync("c"),
        doc="magic not \\0REQ/\\0RES -> connection closed silently; others unaffected",
    ),
    conv(
        "framing_type_zero_closes",
        Send("x", raw(REQ, 0, b"")),
        ExpectClose("x"),
        Sync("c"),
    ),
    conv(
        "framing_type_43_closes",
        Send("x", raw(REQ, 43, b"")),
        ExpectClose("x"),
        Sync("c"),
    ),
    conv(
        "framing_type_1000_closes",
        Send("x", raw(REQ, 1000, b"abc")),
        ExpectClose("x"),
        Sync("c"),
    ),
    conv(
        "framing_type_above_2_31",
        Send("x", raw(REQ, 0xFFFFFFFF, b"abc")),
        ExpectClose("x"),
        Sync("c"),
        doc="gearmand 1.1.20 crashes (SIGSEGV) on a type >= 2**31",
    ),
    conv(
        "framing_unused_type_5",
        Send("x", raw(REQ, 5, b"")),
        Sync("x"),
        doc="type 5 has no name in the protocol",
    ),
    conv(
        "framing_res_magic_request",
        Send("x", raw(RES, P.ECHO_REQ, b"hi")),
        Recv("x"),
        Send("x", raw(RES, P.CAN_DO, b"f")),
        Recv("x"),
        Send("x", raw(RES, P.SUBMIT_JOB, b"f\0\0data")),
        Recv("x"),
        Sync("x"),
        Admin("a", admin("status")),
        doc="\\0RES packets that parse -> ERROR INVALID_MAGIC, connection stays usable",
    ),
    conv(
        "framing_res_magic_response_types",
        Send("x", raw(RES, P.NOOP, b"")),
        Recv("x"),
        Send("x", raw(RES, P.WORK_COMPLETE, H[0] + b"\0x")),
        Recv("x"),
        Sync("x"),
    ),
    conv(
        "framing_fragmented_header",
        [Send("c", bytes([b])) for b in req(P.ECHO_REQ, b"frag")],
        Recv("c"),
        Send("c", req(P.ECHO_REQ, b"split")[:7]),
        Send("c", req(P.ECHO_REQ, b"split")[7:15]),
        Send("c", req(P.ECHO_REQ, b"split")[15:]),
        Recv("c"),
    ),
    conv(
        "framing_pipelined_packets",
        Send("c", req(P.ECHO_REQ, b"1") + req(P.ECHO_REQ, b"2") + req(P.OPTION_REQ, b"bogus")),
        Recv("c", 3),
    ),
    conv(
        "framing_mixed_admin_and_binary",
        Send("c", req(P.ECHO_REQ, b"bin") + admin("status") + req(P.ECHO_REQ, b"bin2")),
        Recv("c", 3),
        Send("c", admin("show jobs") + req(P.ECHO_REQ, b"bin3") + admin("show unique jobs")),
        Recv("c", 3),
    ),
    conv(
        "framing_too_few_args_submit",
        Send("x", req(P.SUBMIT_JOB, b"onlyfunction")),
        Sync("x"),
        Admin("a", admin("status")),
    ),
    conv(
        "framing_too_few_args_work_complete",
        Send("x", raw(REQ, P.WORK_COMPLETE, b"nonulhere")),
        Sync("x"),
    ),
    conv(
        "framing_extra_nuls_in_data",
        can_do("w", b"nul"),
        submit("c", P.SUBMIT_JOB, b"nul", b"u1", b"a\0b\0\0c"),
        grab("w", P.GRAB_JOB_UNIQ),
        Send("w", req(P.WORK_COMPLETE, H[0], b"\0x\0")),
        Recv("c"),
    ),
    conv(
        "framing_half_open_then_valid_elsewhere",
        Send("x", req(P.ECHO_REQ, b"never finished")[:-3]),
        Sync("c"),
        Quiet("x", 0.3),
        doc="an incomplete packet just waits; other connections are served",
    ),
]

# --- response types sent to the server

_RESPONSE_TYPES_AS_REQUESTS: list[tuple[int, bytes]] = [
    (P.NOOP, b""),
    (P.JOB_CREATED, H[0]),
    (P.NO_JOB, b""),
    (P.JOB_ASSIGN, H[0] + b"\0f\0data"),
    (P.ECHO_RES, b"data"),
    (P.ERROR, b"CODE\0text"),
    (P.STATUS_RES, H[0] + b"\x000\x000\x000\x000"),
    (P.ALL_YOURS, b""),
    (P.OPTION_RES, b"exceptions"),
    (P.JOB_ASSIGN_UNIQ, H[0] + b"\0f\0u\0data"),
    (P.SUBMIT_JOB_SCHED, b"f\0u\0" + b"1\0" * 5 + b"data"),
    (P.JOB_ASSIGN_ALL, H[0] + b"\0f\0u\0r\0data"),
    (P.STATUS_RES_UNIQUE, b"u\x000\x000\x000\x000\x000"),
]

UNEXPECTED = [
    conv(
        f"unexpected_{P(t).name.lower()}",
        Send("x", raw(REQ, t, body)),
        Sync("x"),
        Admin("a", admin("status")),
        doc="response/unsupported type sent to the server -> ERROR INVALID_COMMAND",
    )
    for t, body in _RESPONSE_TYPES_AS_REQUESTS
]


# --- workers: abilities and sleep

WORKER = [
    conv(
        "can_do_registers_and_duplicates",
        can_do("w", b"f1", b"f2", b"f1"),
        Sync("w"),
        status(),
        Admin("a", admin("workers")),
        doc="duplicates are not collapsed in 1.1.20 (`workers` shows f1 twice)",
    ),
    conv(
        "cant_do_removes",
        can_do("w", b"f1", b"f2", b"f1"),
        Send("w", req(P.CANT_DO, b"f1")),
        Send("w", req(P.CANT_DO, b"never-registered")),
        Sync("w"),
        status(),
        Admin("a", admin("workers")),
    ),
    conv(
        "reset_abilities",
        can_do("w", b"f1", b"f2"),
        Send("w", req(P.RESET_ABILITIES)),
        Sync("w"),
        status(),
        grab("w"),
    ),
    conv(
        "grab_without_can_do",
        grab("w", P.GRAB_JOB),
        grab("w", P.GRAB_JOB_UNIQ),
        grab("w", P.GRAB_JOB_ALL),
    ),
    conv(
        "pre_sleep_noop_once_per_cycle",
        can_do("w", b"sl"),
        Send("w", req(P.PRE_SLEEP)),
        Sync("w"),
        submit("c", P.SUBMIT_JOB_BG, b"sl", b"", b"1"),
        Recv("w"),
        submit("c", P.SUBMIT_JOB_BG, b"sl", b"", b"2"),
        Sync("w"),
        grab("w"),
        grab("w"),
        grab("w"),
        Send("w", req(P.PRE_SLEEP)),
        Sync("w"),
        doc="NOOP once per sleep cycle: the second submit does not NOOP again",
    ),
    conv(
        "pre_sleep_with_pending_job_noops_at_once",
        submit("c", P.SUBMIT_JOB_BG, b"pj", b"", b"x"),
        can_do("w", b"pj"),
        Send("w", req(P.PRE_SLEEP)),
        Recv("w"),
        grab("w"),
    ),
    conv(
        "pre_sleep_other_function_no_noop",
        can_do("w", b"mine"),
        Send("w", req(P.PRE_SLEEP)),
        Sync("w"),
        submit("c", P.SUBMIT_JOB_BG, b"other", b"", b"x"),
        Sync("w"),
        status(),
    ),
    conv(
        "two_sleepers_one_job",
        can_do("w", b"tw"),
        can_do("w2", b"tw"),
        Send("w", req(P.PRE_SLEEP)),
        Sync("w"),
        Send("w2", req(P.PRE_SLEEP)),
        Sync("w2"),
        submit("c", P.SUBMIT_JOB_BG, b"tw", b"", b"x"),
        Quiet("w", 0.5),
        Quiet("w2", 0.5),
        doc="gearmand wakes every sleeper; gearshift wakes one per new job",
    ),
    conv(
        "set_client_id_in_workers",
        Send("w", req(P.SET_CLIENT_ID, b"worker-1")),
        can_do("w", b"a", b"b"),
        Send("c", req(P.SET_CLIENT_ID, b"client with spaces")),
        Send("x", req(P.SET_CLIENT_ID, b"")),
        Sync("w"),
        Sync("c"),
        Sync("x"),
        Admin("a", admin("workers")),
    ),
    conv(
        "set_client_id_long_is_truncated",
        Send("w", req(P.SET_CLIENT_ID, b"i" * 200)),
        Sync("w"),
        Admin("a", admin("workers")),
    ),
    conv(
        "set_client_id_twice",
        Send("w", req(P.SET_CLIENT_ID, b"first")),
        Send("w", req(P.SET_CLIENT_ID, b"second")),
        Sync("w"),
        Admin("a", admin("workers")),
    ),
]

# --- submit variants and results

SUBMIT = [
    conv(
        "submit_job_foreground_lifecycle",
        can_do("w", b"rev"),
        submit("c", P.SUBMIT_JOB, b"rev", b"u-1", b"hello"),
        status(),
        show_jobs(),
        grab("w"),
        status(),
        Send("w", req(P.WORK_COMPLETE, H[0], b"olleh")),
        Recv("c"),
        Sync("w"),
        status(),
        show_jobs(),
    ),
    conv(
        "submit_job_empty_function_and_data",
        submit("c", P.SUBMIT_JOB_BG, b"", b"", b""),
        status(),
        can_do("w", b""),
        grab("w"),
    ),
    conv(
        "submit_job_bg_lifecycle",
        submit("c", P.SUBMIT_JOB_BG, b"bg", b"bu", b"payload"),
        show_jobs(),
        Admin("a", admin("show unique jobs")),
        can_do("w", b"bg"),
        grab("w", P.GRAB_JOB_UNIQ),
        Send("w", req(P.WORK_COMPLETE, H[0], b"done")),
        Sync("w"),
        Sync("c"),
        show_jobs(),
        status(),
    ),
    conv(
        "submit_every_priority_order",
        submit("c", P.SUBMIT_JOB_LOW_BG, b"pr", b"", b"low-bg"),
        submit("c", P.SUBMIT_JOB_BG, b"pr", b"", b"normal-bg"),
        submit("c", P.SUBMIT_JOB_HIGH_BG, b"pr", b"", b"high-bg"),
        submit("c", P.SUBMIT_JOB_LOW, b"pr", b"", b"low"),
        submit("c", P.SUBMIT_JOB, b"pr", b"", b"normal"),
        submit("c", P.SUBMIT_JOB_HIGH, b"pr", b"", b"high"),
        Admin("a", admin("prioritystatus")),
        status(),
        can_do("w", b"pr"),
        [s for _ in range(7) for s in grab("w")],
        Admin("a", admin("prioritystatus")),
    ),
    conv(
        "submit_high_fg_results_forwarded",
        can_do("w", b"hi"),
        submit("c", P.SUBMIT_JOB_HIGH, b"hi", b"", b"x"),
        grab("w"),
        Send("w", req(P.WORK_DATA, H[0], b"d1")),
        Recv("c"),
        Send("w", req(P.WORK_WARNING, H[0], b"w1")),
        Recv("c"),
        Send("w", req(P.WORK_STATUS, H[0], b"1", b"3")),
        Recv("c"),
        Send("w", req(P.WORK_DATA, H[0], b"")),
        Recv("c"),
        Send("w", req(P.WORK_COMPLETE, H[0], b"")),
        Recv("c"),
        Sync("w"),
    ),
    conv(
        "submit_low_fg_fail",
        can_do("w", b"lo"),
        submit("c", P.SUBMIT_JOB_LOW, b"lo", b"", b"x"),
        grab("w"),
        Send("w", req(P.WORK_FAIL, H[0])),
        Recv("c"),
        Send("w", req(P.WORK_FAIL, H[0])),
        Recv("w"),
        status(),
    ),
    conv(
        "work_status_and_get_status",
        can_do("w", b"st"),
        Send("c", req(P.GET_STATUS, H[0])),
        Recv("c"),
        submit("c", P.SUBMIT_JOB_BG, b"st", b"", b"x"),
        Send("c", req(P.GET_STATUS, H[0])),
        Recv("c"),
        grab("w"),
        Send("c", req(P.GET_STATUS, H[0])),
        Recv("c"),
        Send("w", req(P.WORK_STATUS, H[0], b"7", b"10")),
        Sync("w"),
        Send("c", req(P.GET_STATUS, H[0])),
        Recv("c"),
        Send("w", req(P.WORK_STATUS, H[0], b"abc", b"-1")),
        Sync("w"),
        Send("c", req(P.GET_STATUS, H[0])),
        Recv("c"),
        Send("w", req(P.WORK_COMPLETE, H[0], b"")),
        Sync("w"),
        Send("c", req(P.GET_STATUS, H[0])),
        Recv("c"),
        Send("c", req(P.GET_STATUS, b"")),
        Recv("c"),
    ),
    conv(
        "get_status_long_handle",
        Send("c", req(P.GET_STATUS, b"H:" + b"x" * 70)),
        ExpectClose("c"),
        Sync("c2"),
        doc="gearmand drops the connection for a handle of 64+ bytes",
    ),
    conv(
        "work_results_from_non_owner",
        can_do("w", b"own"),
        can_do("w2", b"own"),
        submit("c", P.SUBMIT_JOB, b"own", b"", b"x"),
        submit("c", P.SUBMIT_JOB, b"own", b"", b"y"),
        Send("w2", req(P.WORK_DATA, H[0], b"d")),
        Recv("w2"),
        grab("w"),
        Send("w2", req(P.WORK_DATA, H[0], b"d")),
        Recv("w2"),
        Send("w2", req(P.WORK_WARNING, H[0], b"d")),
        Recv("w2"),
        Send("w2", req(P.WORK_STATUS, H[0], b"1", b"2")),
        Recv("w2"),
        Send("w2", req(P.WORK_COMPLETE, H[0], b"d")),
        Recv("w2"),
        Send("w2", req(P.WORK_FAIL, H[0])),
        Recv("w2"),
        Send("w2", req(P.WORK_EXCEPTION, H[0], b"e")),
        Recv("w2"),
        Send("w2", req(P.WORK_COMPLETE, H[1], b"queued, not running")),
        Recv("w2"),
        Send("w", req(P.WORK_COMPLETE, H[0], b"ok")),
        Recv("c"),
        Sync("w"),
        status(),
    ),
    conv(
        "work_results_unknown_handle",
        Send("w", req(P.WORK_DATA, b"H:nope:1", b"d")),
        Recv("w"),
        Send("w", req(P.WORK_WARNING, b"H:nope:1", b"d")),
        Recv("w"),
        Send("w", req(P.WORK_STATUS, b"H:nope:1", b"1", b"2")),
        Recv("w"),
        Send("w", req(P.WORK_COMPLETE, b"H:nope:1", b"d")),
        Recv("w"),
        Send("w", req(P.WORK_FAIL, b"H:nope:1")),
        Recv("w"),
        Send("w", req(P.WORK_EXCEPTION, b"H:nope:1", b"e")),
        Recv("w"),
        Send("w", req(P.WORK_FAIL, b"H:" + b"z" * 70)),
        Sync("w"),
    ),
    conv(
        "work_exception_with_and_without_option",
        Send("c", req(P.OPTION_REQ, b"exceptions")),
        Recv("c"),
        can_do("w", b"ex"),
        submit("c", P.SUBMIT_JOB, b"ex", b"shared", b"x"),
        submit("c2", P.SUBMIT_JOB, b"ex", b"shared", b"x"),
        grab("w"),
        Send("w", req(P.WORK_EXCEPTION, H[0], b"boom")),
        Recv("c"),
        Recv("c2"),
        Sync("w"),
        status(),
        doc="opted-in client gets WORK_EXCEPTION, the other WORK_FAIL 'handle\\0'",
    ),
    conv(
        "exceptions_server_flag",
        can_do("w", b"ex"),
        submit("c", P.SUBMIT_JOB, b"ex", b"", b"x"),
        grab("w"),
        Send("w", req(P.WORK_EXCEPTION, H[0], b"boom")),
        Recv("c"),
        args=("--exceptions",),
    ),
    conv(
        "option_req_variants",
        Send("c", req(P.OPTION_REQ, b"exceptions")),
        Recv("c"),
        Send("c", req(P.OPTION_REQ, b"EXCEPTIONS")),
        Recv("c"),
        Send("c", req(P.OPTION_REQ, b"ExCePtIoNs")),
        Recv("c"),
        Send("c", req(P.OPTION_REQ, b"bogus")),
        Recv("c"),
        Send("c", req(P.OPTION_REQ, b"")),
        Recv("c"),
        Send("c", req(P.OPTION_REQ, b"exceptions\0extra")),
        Recv("c"),
    ),
    conv(
        "echo_variants",
        Send("c", req(P.ECHO_REQ, b"")),
        Recv("c"),
        Send("c", req(P.ECHO_REQ, b"a\0b\0\0")),
        Recv("c"),
        Send("c", req(P.ECHO_REQ, bytes(range(256)) * 4096)),
        Recv("c"),
        Send("a", admin("status")),
        Send("a", req(P.ECHO_REQ, b"after admin")),
        Recv("a", 2),
    ),
    conv(
        "unique_64_and_65_bytes",
        submit("c", P.SUBMIT_JOB_BG, b"uq", b"u" * 65, b"x"),
        submit("c", P.SUBMIT_JOB_BG, b"uq", b"v" * 64, b"x"),
        Admin("a", admin("show unique jobs")),
        can_do("w", b"uq"),
        grab("w", P.GRAB_JOB_UNIQ),
        Send("c", req(P.GET_STATUS_UNIQUE, b"v" * 64)),
        Recv("c"),
        doc="1.1.20 stores a 64-byte unique truncated to 63; gearshift keeps it intact",
    ),
    conv(
        "unique_63_bytes",
        submit("c", P.SUBMIT_JOB_BG, b"uq", b"w" * 63, b"x"),
        Admin("a", admin("show unique jobs")),
        can_do("w", b"uq"),
        grab("w", P.GRAB_JOB_UNIQ),
    ),
]

# --- coalescing

COALESCE = [
    conv(
        "coalesce_same_unique_fg_fg_bg",
        can_do("w", b"co"),
        submit("c", P.SUBMIT_JOB, b"co", b"same", b"first"),
        submit("c2", P.SUBMIT_JOB_HIGH, b"co", b"same", b"second"),
        submit("c3", P.SUBMIT_JOB_BG, b"co", b"same", b"third"),
        status(),
        Admin("a", admin("prioritystatus")),
        Send("c", req(P.GET_STATUS_UNIQUE, b"same")),
        Recv("c"),
        grab("w", P.GRAB_JOB_UNIQ),
        Send("w", req(P.WORK_DATA, H[0], b"d")),
        Recv("c"),
        Recv("c2"),
        Send("w", req(P.WORK_COMPLETE, H[0], b"r")),
        Recv("c"),
        Recv("c2"),
        Sync("c3"),
        grab("w"),
    ),
    conv(
        "coalesce_onto_running_job",
        can_do("w", b"co"),
        submit("c", P.SUBMIT_JOB, b"co", b"run", b"x"),
        grab("w"),
        submit("c2", P.SUBMIT_JOB, b"co", b"run", b"y"),
        Send("w", req(P.WORK_STATUS, H[0], b"1", b"2")),
        Recv("c"),
        Recv("c2"),
        Send("c", req(P.GET_STATUS_UNIQUE, b"run")),
        Recv("c"),
        Send("w", req(P.WORK_COMPLETE, H[0], b"r")),
        Recv("c"),
        Recv("c2"),
    ),
    conv(
        "coalesce_dash_unique_by_payload",
        submit("c", P.SUBMIT_JOB_BG, b"da", b"-", b"payload"),
        submit("c", P.SUBMIT_JOB_BG, b"da", b"-", b"payload"),
        submit("c", P.SUBMIT_JOB_BG, b"da", b"-", b"other"),
        submit("c", P.SUBMIT_JOB_BG, b"db", b"-", b"payload"),
        Admin("a", admin("show unique jobs")),
        status(),
        can_do("w", b"da"),
        grab("w", P.GRAB_JOB_UNIQ),
    ),
    conv(
        "coalesce_empty_unique_never",
        submit("c", P.SUBMIT_JOB_BG, b"em", b"", b"p"),
        submit("c", P.SUBMIT_JOB_BG, b"em", b"", b"p"),
        status(),
        Admin("a", admin("show unique jobs")),
    ),
    conv(
        "coalesce_different_function_same_unique",
        submit("c", P.SUBMIT_JOB_BG, b"f1", b"u", b"p"),
        submit("c", P.SUBMIT_JOB_BG, b"f2", b"u", b"p"),
        status(),
        Send("c", req(P.GET_STATUS_UNIQUE, b"u")),
        Recv("c"),
    ),
    conv(
        "get_status_unique_variants",
        Send("c", req(P.GET_STATUS_UNIQUE, b"missing")),
        Recv("c"),
        Send("c", req(P.GET_STATUS_UNIQUE, b"")),
        Recv("c"),
        submit("c2", P.SUBMIT_JOB, b"gs", b"gsu", b"x"),
        Send("c", req(P.GET_STATUS_UNIQUE, b"gsu")),
        Recv("c"),
        submit("c3", P.SUBMIT_JOB_BG, b"gs", b"bgu", b"x"),
        Send("c", req(P.GET_STATUS_UNIQUE, b"bgu")),
        Recv("c"),
    ),
]

# --- epoch, sched, reduce

EPOCH = [
    conv(
        "epoch_past_and_garbage_run_now",
        submit("c", P.SUBMIT_JOB_EPOCH, b"ep", b"p1", b"1\0past"),
        Send("c", req(P.SUBMIT_JOB_EPOCH, b"ep", b"p2", b"garbage", b"garbage-epoch")),
        Recv("c"),
        show_jobs(),
        can_do("w", b"ep"),
        grab("w"),
        grab("w"),
        grab("w"),
    ),
    conv(
        "epoch_future_skipped",
        Send("c", lambda: req(P.SUBMIT_JOB_EPOCH, b"ep", b"fu", _epoch(3600), b"later")),
        Recv("c"),
        submit("c", P.SUBMIT_JOB_BG, b"ep", b"now", b"now"),
        status(),
        show_jobs(),
        can_do("w", b"ep"),
        grab("w", P.GRAB_JOB_UNIQ),
        grab("w", P.GRAB_JOB_UNIQ),
        Send("c", req(P.GET_STATUS_UNIQUE, b"fu")),
        Recv("c"),
    ),
    conv(
        "epoch_wakeup_when_due",
        can_do("w", b"ew"),
        Send("w", req(P.PRE_SLEEP)),
        Sync("w"),
        Send("c", lambda: req(P.SUBMIT_JOB_EPOCH, b"ew", b"soon", _epoch(3), b"soon")),
        Recv("c"),
        Quiet("w", 0.5),
        grab("w"),
        Send("w", req(P.PRE_SLEEP)),
        Quiet("w", 4.5),
        grab("w"),
        doc="1.1.20 NOOPs at submit time but has no wakeup timer (#101); 2.0/gearshift NOOP"
        " the sleeper when the job comes due",
    ),
    conv(
        "reduce_job_foreground",
        can_do("w", b"map"),
        Send("c", req(P.SUBMIT_REDUCE_JOB, b"map", b"mu", b"reducer", b"", b"a b c")),
        Recv("c"),
        grab("w", P.GRAB_JOB_ALL),
        Send("w", req(P.WORK_COMPLETE, H[0], b"3")),
        Recv("c"),
        status(),
    ),
    conv(
        "reduce_job_background",
        Send("c", req(P.SUBMIT_REDUCE_JOB_BACKGROUND, b"map", b"mb", b"red", b"agg", b"d")),
        Recv("c"),
        show_jobs(),
        can_do("w", b"map"),
        grab("w", P.GRAB_JOB_UNIQ),
        Send("c", req(P.SUBMIT_REDUCE_JOB_BACKGROUND, b"map", b"mc", b"red", b"", b"d")),
        Recv("c"),
        grab("w", P.GRAB_JOB),
    ),
    conv(
        "reduce_job_reducer_too_large",
        Send("c", req(P.SUBMIT_REDUCE_JOB, b"map", b"u", b"r" * 65, b"", b"d")),
        Recv("c"),
        Send("c", req(P.SUBMIT_REDUCE_JOB, b"map", b"u2", b"r" * 64, b"", b"d")),
        Recv("c"),
        Sync("c"),
        status(),
    ),
    conv(
        "reduce_job_missing_aggregator",
        Send("c", req(P.SUBMIT_REDUCE_JOB, b"map", b"u", b"red", b"data")),
        Sync("c"),
        Sync("c2"),
    ),
    conv(
        "grab_job_all_plain_job",
        can_do("w", b"ga"),
        submit("c", P.SUBMIT_JOB_BG, b"ga", b"gau", b"x"),
        grab("w", P.GRAB_JOB_ALL),
    ),
    conv(
        "sched_rejected",
        Send("c", req(P.SUBMIT_JOB_SCHED, b"f", b"u", b"0", b"0", b"1", b"1", b"0", b"x")),
        Recv("c"),
        Sync("c"),
        status(),
    ),
]

# --- lifecycle: disconnects, timeouts

LIFECYCLE = [
    conv(
        "worker_disconnect_requeues",
        can_do("w", b"dq"),
        submit("c", P.SUBMIT_JOB, b"dq", b"", b"x"),
        grab("w"),
        Close("w"),
        can_do("w2", b"dq"),
        Send("w2", req(P.PRE_SLEEP)),
        Recv("w2"),
        show_jobs(),
        grab("w2"),
        Send("w2", req(P.WORK_COMPLETE, H[0], b"second try")),
        Recv("c"),
    ),
    conv(
        "cant_do_requeues_running_job",
        can_do("w", b"cq"),
        submit("c", P.SUBMIT_JOB, b"cq", b"", b"x"),
        grab("w"),
        Send("w", req(P.CANT_DO, b"cq")),
        Sync("w"),
        show_jobs(),
        status(),
        Send("w", req(P.WORK_COMPLETE, H[0], b"late")),
        Recv("w"),
        can_do("w2", b"cq"),
        grab("w2"),
    ),
    conv(
        "reset_abilities_requeues_running_job",
        can_do("w", b"rq"),
        submit("c", P.SUBMIT_JOB, b"rq", b"", b"x"),
        grab("w"),
        Send("w", req(P.RESET_ABILITIES)),
        Sync("w"),
        show_jobs(),
        Send("w", req(P.WORK_DATA, H[0], b"late")),
        Recv("w"),
    ),
    conv(
        "job_retries_limit",
        can_do("w", b"jr"),
        submit("c", P.SUBMIT_JOB, b"jr", b"", b"x"),
        grab("w"),
        Close("w"),
        can_do("w2", b"jr"),
        grab("w2"),
        Close("w2"),
        Quiet("c", 1.0),
        show_jobs(),
        can_do("w3", b"jr"),
        grab("w3"),
        Close("w3"),
        Quiet("c", 1.0),
        show_jobs(),
        args=("--job-retries", "2"),
        doc="1.1.20: N=2 fails the job when the 2nd worker is lost",
    ),
    conv(
        "job_retries_zero",
        can_do("w", b"jz"),
        submit("c", P.SUBMIT_JOB, b"jz", b"", b"x"),
        grab("w"),
        Close("w"),
        Quiet("c", 1.0),
        show_jobs(),
        args=("--job-retries", "0"),
        doc="0 = unlimited in 1.1.20, 0 = no retry in 2.0/gearshift",
    ),
    conv(
        "client_disconnect_queued_job_ignored",
        submit("c", P.SUBMIT_JOB, b"cd", b"cdu", b"x"),
        Close("c"),
        Sleep(0.3),
        status(),
        show_jobs(),
        can_do("w", b"cd"),
        grab("w"),
        status(),
    ),
    conv(
        "client_disconnect_running_job_continues",
        can_do("w", b"cr"),
        submit("c", P.SUBMIT_JOB, b"cr", b"", b"x"),
        grab("w"),
        Close("c"),
        Sleep(0.3),
        status(),
        Send("w", req(P.WORK_DATA, H[0], b"still mine")),
        Send("w", req(P.WORK_COMPLETE, H[0], b"done")),
        Sync("w"),
        status(),
    ),
    conv(
        "can_do_timeout_requeues",
        Send("w", req(P.CAN_DO_TIMEOUT, b"to", b"500")),
        submit("c", P.SUBMIT_JOB, b"to", b"", b"x"),
        grab("w"),
        Sleep(2.5),
        show_jobs(),
        status(),
        Send("w", req(P.WORK_COMPLETE, H[0], b"late")),
        Recv("w"),
        can_do("w2", b"to"),
        grab("w2"),
        Send("w2", req(P.WORK_COMPLETE, H[0], b"ok")),
        Recv("c"),
        Admin("a", admin("workers")),
    ),
    conv(
        "can_do_timeout_completed_in_time",
        Send("w", req(P.CAN_DO_TIMEOUT, b"tc", b"1000")),
        submit("c", P.SUBMIT_JOB, b"tc", b"", b"x"),
        grab("w"),
        Send("w", req(P.WORK_COMPLETE, H[0], b"quick")),
        Recv("c"),
        submit("c", P.SUBMIT_JOB, b"tc", b"", b"y"),
        Sleep(1.6),
        status(),
        grab("w"),
        status(),
        doc="1.1.20's timer outlives the completed job (#301): counters go wrong",
    ),
    conv(
        "can_do_timeout_non_numeric",
        Send("w", req(P.CAN_DO_TIMEOUT, b"tn", b"soon")),
        Sync("w"),
        status(),
        Admin("a", admin("workers")),
    ),
    conv(
        "cancel_job_admin",
        submit("c", P.SUBMIT_JOB, b"cj", b"", b"x"),
        Admin("a", b"cancel job " + H[0] + b"\r\n"),
        Recv("c"),
        show_jobs(),
        status(),
        Admin("a", b"cancel job " + H[0] + b"\r\n"),
        can_do("w", b"cj"),
        grab("w"),
        show_jobs(),
        Admin("a", b"cancel job " + H[0] + b"\r\n"),
    ),
    conv(
        "maxqueue_limits",
        Admin("a", admin("maxqueue mq 1")),
        submit("c", P.SUBMIT_JOB_BG, b"mq", b"", b"1"),
        Admin("a", admin("maxqueue mq 2")),
        submit("c", P.SUBMIT_JOB_BG, b"mq", b"", b"2"),
        submit("c", P.SUBMIT_JOB_BG, b"mq", b"", b"3"),
        submit("c", P.SUBMIT_JOB_BG, b"mq", b"dup", b"4"),
        Admin("a", admin("maxqueue mq 0 0 3")),
        submit("c", P.SUBMIT_JOB_HIGH_BG, b"mq", b"", b"h"),
        submit("c", P.SUBMIT_JOB_LOW_BG, b"mq", b"", b"l"),
        Admin("a", admin("maxqueue mq")),
        submit("c", P.SUBMIT_JOB_LOW_BG, b"mq", b"", b"l2"),
        Admin("a", admin("maxqueue nosuch 1")),
        Admin("a", admin("maxqueue")),
        status(),
    ),
]

# --- scheduling order across functions

ORDER = [
    conv(
        "priority_across_functions",
        can_do("w", b"fa", b"fb"),
        submit("c", P.SUBMIT_JOB_HIGH_BG, b"fa", b"", b"a-high"),
        submit("c", P.SUBMIT_JOB_LOW_BG, b"fb", b"", b"b-low"),
        grab("w"),
        grab("w"),
        grab("w"),
        doc="1.1.20 serves the most recently registered function first (LOW b before HIGH a);"
        " 2.0/gearshift: priority is global",
    ),
    conv(
        "equal_priority_across_functions",
        can_do("w", b"fa", b"fb"),
        submit("c", P.SUBMIT_JOB_BG, b"fa", b"", b"a0"),
        submit("c", P.SUBMIT_JOB_BG, b"fa", b"", b"a1"),
        submit("c", P.SUBMIT_JOB_BG, b"fb", b"", b"b0"),
        submit("c", P.SUBMIT_JOB_BG, b"fb", b"", b"b1"),
        [s for _ in range(5) for s in grab("w")],
        doc="1.1.20 drains the last-registered function first; 2.0/gearshift round-robin",
    ),
    conv(
        "round_robin_flag",
        can_do("w", b"fa", b"fb"),
        submit("c", P.SUBMIT_JOB_BG, b"fa", b"", b"a0"),
        submit("c", P.SUBMIT_JOB_BG, b"fa", b"", b"a1"),
        submit("c", P.SUBMIT_JOB_BG, b"fb", b"", b"b0"),
        submit("c", P.SUBMIT_JOB_BG, b"fb", b"", b"b1"),
        [s for _ in range(5) for s in grab("w")],
        args=("--round-robin",),
    ),
    conv(
        "requeue_goes_to_tail",
        can_do("w", b"rt"),
        submit("c", P.SUBMIT_JOB_BG, b"rt", b"", b"first"),
        submit("c", P.SUBMIT_JOB_BG, b"rt", b"", b"second"),
        grab("w"),
        Close("w"),
        can_do("w2", b"rt"),
        grab("w2"),
        grab("w2"),
        grab("w2"),
    ),
]

# --- admin protocol


def _admin_seq(*lines: str, conn: str = "a") -> list[Step]:
    return [Admin(conn, admin(x)) for x in lines]


def _populated() -> tuple[Step, ...]:
    """A server with two functions, a worker, a running job and queued jobs of every kind."""
    return steps(
        Send("w", req(P.SET_CLIENT_ID, b"worker-1")),
        can_do("w", b"alpha", b"beta"),
        submit("c", P.SUBMIT_JOB_BG, b"alpha", b"ua", b"1"),
        submit("c", P.SUBMIT_JOB_HIGH, b"beta", b"ub", b"2"),
        submit("c", P.SUBMIT_JOB_LOW_BG, b"beta", b"", b"3"),
        submit("c", P.SUBMIT_JOB_HIGH_BG, b"gamma", b"ug", b"4"),
        grab("w", P.GRAB_JOB_UNIQ),
    )


ADMIN = [
    conv(
        "admin_empty_server",
        _admin_seq("status", "prioritystatus", "show jobs", "show unique jobs", "workers"),
    ),
    conv(
        "admin_populated_server",
        _populated(),
        _admin_seq("status", "prioritystatus", "workers", "show jobs", "show unique jobs"),
    ),
    conv(
        "admin_case_insensitive",
        _populated(),
        _admin_seq(
            "STATUS",
            "PrioritySTATUS",
            "WORKERS",
            "SHOW JOBS",
            "Show Unique Jobs",
            "VERSION",
            "GetPid",
            "VERBOSE",
        ),
    ),
    conv(
        "admin_extra_tokens_ignored",
        _populated(),
        _admin_seq(
            "status a b c d",
            "version extra args",
            "workers x",
            "show jobs x y",
            "getpid 1 2 3 4",
            "verbose DEBUG",
        ),
    ),
    conv(
        "admin_too_many_tokens_closes",
        Admin("x", admin("status a b c d e")),
        Sync("a"),
        Admin("a", admin("status")),
    ),
    conv(
        "admin_empty_line",
        _admin_seq("", " ", "   \t  "),
        Sync("a"),
    ),
    conv(
        "admin_bare_lf_terminator",
        Admin("a", b"status\n"),
        Admin("a", b"version\n"),
        Admin("a", b"create function bar\n"),
        Admin("a", b"status\n"),
        doc="1.1.20 keeps the terminator in the last token's length: `create function bar\\n`"
        " creates `ba`",
    ),
    conv(
        "admin_unknown_commands",
        _admin_seq(
            "bogus",
            "shutdownx",
            "status\tx",
            "show",
            "show x",
            "show jobs unique",
            "show unique",
            "cancel",
            "cancel x",
            "cancel x y",
            "cancel job",
            " status",
            "status  ",
            "show  jobs",
            "show\tjobs",
            "\tstatus",
        ),
    ),
    conv(
        "admin_version_verbose_getpid",
        _admin_seq("version", "verbose", "getpid"),
    ),
    conv(
        "admin_create_function",
        _admin_seq(
            "create function newf",
            "create function newf",
            "status",
            "create function",
            "create",
            "create x y",
            "status",
        ),
    ),
    conv(
        "admin_drop_function",
        _admin_seq(
            "create function df",
            "drop function df",
            "drop function df",
            "drop function nosuch",
            "drop function",
            "drop",
            "drop x y",
        ),
        can_do("w", b"busy"),
        Sync("w"),
        Admin("a", admin("drop function busy")),
        Admin("a", admin("status")),
    ),
    conv(
        "admin_drop_function_with_queued_jobs",
        submit("c", P.SUBMIT_JOB_BG, b"queued", b"", b"x"),
        Admin("a", admin("drop function queued")),
        Admin("a", admin("status")),
        Admin("a", admin("show jobs")),
        can_do("w", b"queued"),
        grab("w"),
        Admin("a", admin("status")),
        doc="gearmand drops a function that still has queued jobs (they become unreachable);"
        " gearshift refuses",
    ),
    conv(
        "admin_cancel_job",
        submit("c", P.SUBMIT_JOB_BG, b"cf", b"", b"x"),
        Admin("a", b"cancel job " + H[0] + b"\r\n"),
        Admin("a", admin("cancel job H:nosuch:1")),
        Admin("a", admin("cancel job")),
        Admin("a", admin("show jobs")),
        can_do("w", b"cf"),
        grab("w"),
        Admin("a", admin("show jobs")),
    ),
    conv(
        "admin_cancel_running_job",
        can_do("w", b"cr"),
        submit("c", P.SUBMIT_JOB, b"cr", b"", b"x"),
        grab("w"),
        Admin("a", b"cancel job " + H[0] + b"\r\n"),
        Recv("c"),
        Admin("a", admin("show jobs")),
        Send("w", req(P.WORK_COMPLETE, H[0], b"done")),
        Sync("w"),
        Admin("a", admin("status")),
    ),
    conv(
        "admin_maxqueue_forms",
        submit("c", P.SUBMIT_JOB_BG, b"m", b"", b"1"),
        _admin_seq(
            "maxqueue",
            "maxqueue m",
            "maxqueue m 5",
            "maxqueue m 1 2 3",
            "maxqueue m -1",
            "maxqueue m x",
            "maxqueue m 1 2",
            "MAXQUEUE m 0",
        ),
        submit("c", P.SUBMIT_JOB_BG, b"m", b"", b"2"),
    ),
    conv(
        "admin_workers_lists_every_connection",
        Send("w", req(P.SET_CLIENT_ID, b"wid")),
        can_do("w", b"f1", b"f2", b"f3"),
        Send("w", req(P.CANT_DO, b"f2")),
        Sync("w"),
        Sync("c"),
        Admin("a", admin("workers")),
        Close("c"),
        Sleep(0.3),
        Admin("a", admin("workers")),
    ),
    conv(
        "admin_status_counts_running_and_ignored",
        can_do("w", b"s"),
        submit("c", P.SUBMIT_JOB, b"s", b"", b"1"),
        submit("c", P.SUBMIT_JOB, b"s", b"", b"2"),
        grab("w"),
        Close("c"),
        Sleep(0.3),
        _admin_seq("status", "prioritystatus", "show jobs"),
    ),
    conv(
        "admin_show_unique_jobs_empty_and_dash",
        submit("c", P.SUBMIT_JOB_BG, b"u", b"", b"1"),
        submit("c", P.SUBMIT_JOB_BG, b"u", b"-", b"2"),
        submit("c", P.SUBMIT_JOB_BG, b"u", b"x y", b"3"),
        Admin("a", admin("show unique jobs")),
    ),
    conv(
        "admin_over_same_connection_as_binary",
        can_do("a", b"self"),
        submit("a", P.SUBMIT_JOB_BG, b"self", b"", b"x"),
        Admin("a", admin("status")),
        Admin("a", admin("workers")),
        grab("a"),
        Admin("a", admin("status")),
    ),
    conv(
        "admin_shutdown",
        Sync("c"),
        Admin("a", admin("shutdown")),
        ExpectClose("a", timeout=2.0),
        Sync("c"),
        Sleep(0.5),
        Sync("c2"),
        doc="gearmand 1.1.20 removed shutdown; gearshift accepts it from loopback and exits",
    ),
    conv(
        "admin_shutdown_graceful",
        submit("c", P.SUBMIT_JOB_BG, b"gr", b"", b"x"),
        can_do("w", b"gr"),
        Sync("w"),
        Admin("a", admin("shutdown graceful")),
        Sleep(0.5),
        Sync("c2"),
        grab("w"),
        Send("w", req(P.WORK_COMPLETE, H[0], b"done")),
        ExpectClose("w", timeout=2.0),
        doc="gearmand 1.1.20 removed shutdown; gearshift stops listening, lets open"
        " connections finish the queued jobs, then exits",
    ),
]

CONVERSATIONS: list[Conversation] = [
    *FRAMING,
    *UNEXPECTED,
    *WORKER,
    *SUBMIT,
    *COALESCE,
    *EPOCH,
    *LIFECYCLE,
    *ORDER,
    *ADMIN,
]
