"""Differential test: every scripted conversation, gearmand 1.1.20 versus gearshift.

Each conversation of ``conversations.CONVERSATIONS`` is played against a fresh
``/usr/sbin/gearmand`` and a fresh gearshift server (both started with the
conversation's ``server_args``), at the same time, and the normalised transcripts must
be identical.  Where gearshift deliberately differs, ``DELIBERATE_DIFFERENCES`` names
the conversation, gives the reason (also listed in docs/differences.md) and the exact
transcript gearshift must produce; the test then also checks that gearmand really does
behave the 1.1.20 way, so an entry cannot silently rot into "no difference".
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from gearshift.protocol.packets import REQ, RES
from tests.conftest import ServerFactory
from tests.interop.conversations import CONVERSATIONS
from tests.interop.harness import (
    Admin,
    Conversation,
    Quiet,
    Sleep,
    _normalise_admin,
    _Normaliser,
    admin_commands,
    play,
    render_sent,
    sent_magics,
    sent_packet_types,
)
from tests.procs import GEARMAND, Gearmand, Gearshift, ServerProcess, have_gearmand

pytestmark = pytest.mark.interop

DOCS = Path(__file__).resolve().parents[2] / "docs" / "differences.md"


@dataclass(frozen=True)
class Difference:
    """A conversation where gearshift deliberately answers differently from gearmand 1.1.20."""

    reason: str
    #: A line only gearmand 1.1.20's transcript contains: proof the difference is real.
    gearmand_shows: str
    #: gearshift's complete expected transcript.
    gearshift: tuple[str, ...]


_V64 = "v" * 64

DELIBERATE_DIFFERENCES: dict[str, Difference] = {
    "framing_type_above_2_31": Difference(
        reason="gearmand 1.1.20 dies with SIGSEGV on a packet type >= 2**31 (signed index);"
        " gearshift closes only the offending connection, like any other unknown type",
        gearmand_shows="c <- CONNECTION REFUSED",
        gearshift=(
            "x -> RAW b'\\x00REQ\\xff\\xff\\xff\\xff\\x00\\x00\\x00\\x03abc'",
            "x <- CLOSED",
            "c <- sync",
        ),
    ),
    "framing_oversized_length": Difference(
        reason="a body longer than --max-packet-size (default 1 GiB, at most 4 GiB - 1;"
        " issue 2) closes that connection at once; gearmand has no limit and buffers up to"
        " 4 GiB per connection",
        gearmand_shows="c <- sync",
        gearshift=(
            "x -> RAW b'\\x00REQ\\x00\\x00\\x00\\x10\\xff\\xff\\xff\\xf0partial body'",
            "x <- CLOSED",
            "c <- sync",
        ),
    ),
    "two_sleepers_one_job": Difference(
        reason="gearshift wakes only as many sleeping workers as there are new jobs"
        " (DESIGN.md: no thundering herd); gearmand NOOPs every sleeper",
        gearmand_shows="w2 <- NOOP()",
        gearshift=(
            "w -> CAN_DO(b'tw')",
            "w2 -> CAN_DO(b'tw')",
            "w -> PRE_SLEEP()",
            "w <- sync",
            "w2 -> PRE_SLEEP()",
            "w2 <- sync",
            "c -> SUBMIT_JOB_BG(b'tw', b'', b'x')",
            "c <- JOB_CREATED(b'H:#1')",
            "w <- NOOP()",
            "w -> GRAB_JOB()",
            "w <- JOB_ASSIGN(b'H:#1', b'tw', b'x')",
        ),
    ),
    "worker_wakeup_flag": Difference(
        reason="with -w 1 a woken worker that does not grab within --worker-wakeup-delay"
        " (50 ms) has its wakeup passed on to the next sleeper; gearmand leaves the job"
        " waiting for the first one",
        gearmand_shows="c <- JOB_CREATED(b'H:#2')",
        gearshift=(
            "w0 -> CAN_DO(b'ww')",
            "w1 -> CAN_DO(b'ww')",
            "w2 -> CAN_DO(b'ww')",
            "w0 -> PRE_SLEEP()",
            "w0 <- sync",
            "w1 -> PRE_SLEEP()",
            "w1 <- sync",
            "w2 -> PRE_SLEEP()",
            "w2 <- sync",
            "c -> SUBMIT_JOB_BG(b'ww', b'', b'1')",
            "c <- JOB_CREATED(b'H:#1')",
            "w0 <- NOOP()",
            "w1 <- NOOP()",
            "w2 <- NOOP()",
            "c -> SUBMIT_JOB_BG(b'ww', b'', b'2')",
            "c <- JOB_CREATED(b'H:#2')",
            "c -> SUBMIT_JOB_BG(b'ww', b'', b'3')",
            "c <- JOB_CREATED(b'H:#3')",
        ),
    ),
    "unique_64_and_65_bytes": Difference(
        reason="gearmand 1.1.20 stores a 64-byte unique truncated to 63 bytes, shifts the"
        " lost byte into the job data (JOB_ASSIGN_UNIQ data b'\\x00x') and drops the"
        " connection on GET_STATUS_UNIQUE of it; gearshift keeps the 64 bytes intact",
        gearmand_shows="c <- CLOSED",
        gearshift=(
            "c -> SUBMIT_JOB_BG(b'uq', b'" + "u" * 65 + "', b'x')",
            "c <- ERROR(b'ARGUMENT_TOO_LARGE', b'Unique value too large')",
            f"c -> SUBMIT_JOB_BG(b'uq', b'{_V64}', b'x')",
            "c <- JOB_CREATED(b'H:#1')",
            "a -> ADMIN b'show unique jobs\\r\\n'",
            f"a <- ADMIN [b'{_V64}\\n', b'.\\n']",
            "w -> CAN_DO(b'uq')",
            "w -> GRAB_JOB_UNIQ()",
            f"w <- JOB_ASSIGN_UNIQ(b'H:#1', b'uq', b'{_V64}', b'x')",
            f"c -> GET_STATUS_UNIQUE(b'{_V64}')",
            f"c <- STATUS_RES_UNIQUE(b'{_V64}', b'1', b'1', b'0', b'0', b'0')",
        ),
    ),
    "epoch_wakeup_when_due": Difference(
        reason="gearmand 1.1.20 NOOPs sleepers when an epoch job is submitted (too early to"
        " grab it) and has no timer for when it comes due (#101); gearshift, like 2.0"
        " (#459), NOOPs them when the job comes due",
        gearmand_shows="w <- NOOP()",
        gearshift=(
            "w -> CAN_DO(b'ew')",
            "w -> PRE_SLEEP()",
            "w <- sync",
            "c -> SUBMIT_JOB_EPOCH(b'ew', b'soon', b'<epoch>', b'soon')",
            "c <- JOB_CREATED(b'H:#1')",
            "w -> GRAB_JOB()",
            "w <- NO_JOB()",
            "w -> PRE_SLEEP()",
            "w <- NOOP()",
            "w -> GRAB_JOB()",
            "w <- JOB_ASSIGN(b'H:#1', b'ew', b'soon')",
        ),
    ),
    "job_retries_limit": Difference(
        reason="--job-retries follows gearmand 2.0 (#500): N is the number of retries, so"
        " N=2 fails the job when the 3rd worker is lost; 1.1.20 fails it at the 2nd",
        gearmand_shows="w3 <- NO_JOB()",
        gearshift=(
            "w -> CAN_DO(b'jr')",
            "c -> SUBMIT_JOB(b'jr', b'', b'x')",
            "c <- JOB_CREATED(b'H:#1')",
            "w -> GRAB_JOB()",
            "w <- JOB_ASSIGN(b'H:#1', b'jr', b'x')",
            "w -> close",
            "w2 -> CAN_DO(b'jr')",
            "w2 -> GRAB_JOB()",
            "w2 <- JOB_ASSIGN(b'H:#1', b'jr', b'x')",
            "w2 -> close",
            "a -> ADMIN b'show jobs\\r\\n'",
            "a <- ADMIN [b'H:#1\\t2\\t0\\t0\\n', b'.\\n']",
            "w3 -> CAN_DO(b'jr')",
            "w3 -> GRAB_JOB()",
            "w3 <- JOB_ASSIGN(b'H:#1', b'jr', b'x')",
            "w3 -> close",
            "c <- WORK_FAIL(b'H:#1')",
            "a -> ADMIN b'show jobs\\r\\n'",
            "a <- ADMIN [b'.\\n']",
        ),
    ),
    "job_retries_zero": Difference(
        reason="--job-retries 0 means 'no retry' in gearmand 2.0 and gearshift (-1 is"
        " unlimited); in 1.1.20 it meant unlimited",
        gearmand_shows="a <- ADMIN [b'H:#1\\t1\\t0\\t0\\n', b'.\\n']",
        gearshift=(
            "w -> CAN_DO(b'jz')",
            "c -> SUBMIT_JOB(b'jz', b'', b'x')",
            "c <- JOB_CREATED(b'H:#1')",
            "w -> GRAB_JOB()",
            "w <- JOB_ASSIGN(b'H:#1', b'jz', b'x')",
            "w -> close",
            "c <- WORK_FAIL(b'H:#1')",
            "a -> ADMIN b'show jobs\\r\\n'",
            "a <- ADMIN [b'.\\n']",
        ),
    ),
    "priority_across_functions": Difference(
        reason="priority is global across a worker's functions (gearmand 2.0, #173/#431);"
        " 1.1.20 hands out a LOW job of the last-registered function before a HIGH job"
        " of another",
        gearmand_shows="w <- JOB_ASSIGN(b'H:#2', b'fb', b'b-low')",
        gearshift=(
            "w -> CAN_DO(b'fa')",
            "w -> CAN_DO(b'fb')",
            "c -> SUBMIT_JOB_HIGH_BG(b'fa', b'', b'a-high')",
            "c <- JOB_CREATED(b'H:#1')",
            "c -> SUBMIT_JOB_LOW_BG(b'fb', b'', b'b-low')",
            "c <- JOB_CREATED(b'H:#2')",
            "w -> GRAB_JOB()",
            "w <- JOB_ASSIGN(b'H:#1', b'fa', b'a-high')",
            "w -> GRAB_JOB()",
            "w <- JOB_ASSIGN(b'H:#2', b'fb', b'b-low')",
            "w -> GRAB_JOB()",
            "w <- NO_JOB()",
        ),
    ),
    "equal_priority_across_functions": Difference(
        reason="round-robin across a worker's functions is always on (gearmand 2.0);"
        " 1.1.20 without -R drains the last-registered function first",
        gearmand_shows="w <- JOB_ASSIGN(b'H:#4', b'fb', b'b1')",
        gearshift=(
            "w -> CAN_DO(b'fa')",
            "w -> CAN_DO(b'fb')",
            "c -> SUBMIT_JOB_BG(b'fa', b'', b'a0')",
            "c <- JOB_CREATED(b'H:#1')",
            "c -> SUBMIT_JOB_BG(b'fa', b'', b'a1')",
            "c <- JOB_CREATED(b'H:#2')",
            "c -> SUBMIT_JOB_BG(b'fb', b'', b'b0')",
            "c <- JOB_CREATED(b'H:#3')",
            "c -> SUBMIT_JOB_BG(b'fb', b'', b'b1')",
            "c <- JOB_CREATED(b'H:#4')",
            "w -> GRAB_JOB()",
            "w <- JOB_ASSIGN(b'H:#3', b'fb', b'b0')",
            "w -> GRAB_JOB()",
            "w <- JOB_ASSIGN(b'H:#1', b'fa', b'a0')",
            "w -> GRAB_JOB()",
            "w <- JOB_ASSIGN(b'H:#4', b'fb', b'b1')",
            "w -> GRAB_JOB()",
            "w <- JOB_ASSIGN(b'H:#2', b'fa', b'a1')",
            "w -> GRAB_JOB()",
            "w <- NO_JOB()",
        ),
    ),
    "can_do_timeout_stale_timer": Difference(
        reason="gearmand 1.1.20 keeps one CAN_DO_TIMEOUT timer per connection, armed by the"
        " first job and not cancelled when it completes (#301/#448): it fires during the"
        " next job and corrupts the running count (4294967295); gearshift has one timer per"
        " assigned job, cancelled on completion",
        gearmand_shows="a <- ADMIN [b'ts\\t0\\t4294967295\\t1\\n', b'.\\n']",
        gearshift=(
            "w -> CAN_DO_TIMEOUT(b'ts', b'3000')",
            "c -> SUBMIT_JOB(b'ts', b'', b'first')",
            "c <- JOB_CREATED(b'H:#1')",
            "w -> GRAB_JOB()",
            "w <- JOB_ASSIGN(b'H:#1', b'ts', b'first')",
            "w -> WORK_COMPLETE(b'H:#1', b'quick')",
            "c <- WORK_COMPLETE(b'H:#1', b'quick')",
            "c -> SUBMIT_JOB(b'ts', b'', b'second')",
            "c <- JOB_CREATED(b'H:#2')",
            "w -> GRAB_JOB()",
            "w <- JOB_ASSIGN(b'H:#2', b'ts', b'second')",
            "a -> ADMIN b'status\\r\\n'",
            "a <- ADMIN [b'ts\\t1\\t1\\t1\\n', b'.\\n']",
            "w -> WORK_COMPLETE(b'H:#2', b'in time')",
            "c <- WORK_COMPLETE(b'H:#2', b'in time')",
            "w <- sync",
            "a -> ADMIN b'status\\r\\n'",
            "a <- ADMIN [b'ts\\t0\\t0\\t1\\n', b'.\\n']",
            "a -> ADMIN b'show jobs\\r\\n'",
            "a <- ADMIN [b'.\\n']",
        ),
    ),
    "admin_bare_lf_terminator": Difference(
        reason="gearmand 1.1.20 counts the '\\n' terminator in the last token's length, so"
        " 'create function bar\\n' creates 'ba'; gearshift strips the terminator first",
        gearmand_shows="a <- ADMIN [b'ba\\t0\\t0\\t0\\n', b'.\\n']",
        gearshift=(
            "a -> ADMIN b'status\\n'",
            "a <- ADMIN [b'.\\n']",
            "a -> ADMIN b'version\\n'",
            "a <- ADMIN [b'OK <version>\\n']",
            "a -> ADMIN b'create function bar\\n'",
            "a <- ADMIN [b'OK\\r\\n']",
            "a -> ADMIN b'status\\n'",
            "a <- ADMIN [b'bar\\t0\\t0\\t0\\n', b'.\\n']",
        ),
    ),
    "admin_drop_function_with_queued_jobs": Difference(
        reason="gearmand drops a function that still has queued jobs: the jobs stay in"
        " `show jobs` but no worker can ever get them (GRAB_JOB -> NO_JOB); gearshift"
        " refuses with gearmand's own 'still connected workers' error, losing nothing",
        gearmand_shows="w <- NO_JOB()",
        gearshift=(
            "c -> SUBMIT_JOB_BG(b'queued', b'', b'x')",
            "c <- JOB_CREATED(b'H:#1')",
            "a -> ADMIN b'drop function queued\\r\\n'",
            "a <- ADMIN [b'ERR there are still connected workers or executing clients\\r\\n']",
            "a -> ADMIN b'status\\r\\n'",
            "a <- ADMIN [b'queued\\t1\\t0\\t0\\n', b'.\\n']",
            "a -> ADMIN b'show jobs\\r\\n'",
            "a <- ADMIN [b'H:#1\\t0\\t0\\t1\\n', b'.\\n']",
            "w -> CAN_DO(b'queued')",
            "w -> GRAB_JOB()",
            "w <- JOB_ASSIGN(b'H:#1', b'queued', b'x')",
            "a -> ADMIN b'status\\r\\n'",
            "a <- ADMIN [b'queued\\t1\\t1\\t1\\n', b'.\\n']",
        ),
    ),
    "resubmit_unique_of_abandoned_job": Difference(
        reason="gearmand attaches a new submit to an abandoned job with the same unique (its"
        " only client left); the next GRAB discards that job and the new client waits"
        " forever. gearshift gives the new submit a fresh job",
        gearmand_shows="c2 <- JOB_CREATED(b'H:#1')",
        gearshift=(
            "c -> SUBMIT_JOB(b'ra', b'same', b'old')",
            "c <- JOB_CREATED(b'H:#1')",
            "c -> close",
            "c2 -> SUBMIT_JOB(b'ra', b'same', b'new')",
            "c2 <- JOB_CREATED(b'H:#2')",
            "w -> CAN_DO(b'ra')",
            "w -> GRAB_JOB_UNIQ()",
            "w <- JOB_ASSIGN_UNIQ(b'H:#2', b'ra', b'same', b'new')",
            "w -> GRAB_JOB_UNIQ()",
            "w <- NO_JOB()",
        ),
    ),
    "admin_shutdown": Difference(
        reason="gearmand removed `shutdown` in 1.1.15 (PR #40); gearshift accepts it from"
        " loopback peers (issue 2) and stops: every connection closes, the port closes",
        gearmand_shows="a <- STILL OPEN",
        gearshift=(
            "c <- sync",
            "a -> ADMIN b'shutdown\\r\\n'",
            "a <- ADMIN [b'OK\\r\\n']",
            "a <- CLOSED",
            "c <- CLOSED",
            "c2 <- CONNECTION REFUSED",
            "c2 <- CLOSED",
        ),
    ),
    "admin_shutdown_graceful": Difference(
        reason="`shutdown graceful` (removed in gearmand 1.1.15) is accepted from loopback and"
        " drains like SIGUSR1: submits are refused, the port stays open for workers, open"
        " connections finish the queued work, then the server exits",
        gearmand_shows="w <- STILL OPEN",
        gearshift=(
            "c -> SUBMIT_JOB_BG(b'gr', b'', b'x')",
            "c <- JOB_CREATED(b'H:#1')",
            "w -> CAN_DO(b'gr')",
            "w <- sync",
            "a -> ADMIN b'shutdown graceful\\r\\n'",
            "a <- ADMIN [b'OK\\r\\n']",
            "c2 <- sync",
            "c2 -> SUBMIT_JOB_BG(b'gr2', b'', b'late')",
            "c2 <- ERROR(b'SHUTDOWN_GRACEFUL', b'Server is shutting down: submit the job to"
            " another server')",
            "w -> GRAB_JOB()",
            "w <- JOB_ASSIGN(b'H:#1', b'gr', b'x')",
            "w -> WORK_COMPLETE(b'H:#1', b'done')",
            "w <- CLOSED",
        ),
    ),
}

_BY_NAME = {c.name: c for c in CONVERSATIONS}


def _ids() -> list[str]:
    return [c.name for c in CONVERSATIONS]


def _timed(conv: Conversation) -> bool:
    return any(isinstance(s, Quiet | Sleep) for s in conv.steps)


def _play_on(factory: ServerFactory, conv: Conversation) -> list[str]:
    srv = factory(*conv.server_args)
    return play(srv.port, conv.steps)


def _require_gearmand() -> None:
    # The peers are installed by `make test` (scripts/install-system-deps.sh); a missing
    # one is a broken test environment, never a reason to skip.
    assert have_gearmand(), f"{GEARMAND} is missing: run `make system-deps`"


#: Conversations played at the same time.  Most of a conversation's wall time is spent
#: waiting (server start-up, echo round trips, timer windows), so overlapping a few keeps
#: the suite short on a busy two-core machine without loading it much more.
PARALLEL = 4

Transcripts = tuple[list[str], list[str]]


def _play_both(conv: Conversation) -> Transcripts:
    """Fresh gearmand and gearshift (the classes behind the make_* fixtures), played at once."""
    servers: list[ServerProcess] = []

    def one(cls: type[ServerProcess]) -> list[str]:
        srv = cls(conv.server_args)
        servers.append(srv)
        return play(srv.start().port, conv.steps)

    try:
        with ThreadPoolExecutor(2) as pool:
            ref = pool.submit(one, Gearmand)
            ours = pool.submit(one, Gearshift)
            return ref.result(), ours.result()
    finally:
        for srv in servers:
            srv.close()


@pytest.fixture(scope="module")
def transcripts(request: pytest.FixtureRequest) -> Iterator[dict[str, Future[Transcripts]]]:
    """Starts playing every selected conversation in the background, PARALLEL at a time."""
    _require_gearmand()
    selected = [
        str(item.callspec.params["name"])
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and item.module is request.module
        and item.originalname == "test_conversation"
    ]
    pool = ThreadPoolExecutor(PARALLEL)
    futures = {name: pool.submit(_play_both, _BY_NAME[name]) for name in selected}
    yield futures
    for fut in futures.values():
        fut.cancel()
    pool.shutdown(wait=True)


@pytest.mark.parametrize("name", _ids())
def test_conversation(name: str, transcripts: dict[str, Future[Transcripts]]) -> None:
    gearmand_lines, gearshift_lines = transcripts[name].result(timeout=300)
    diff = DELIBERATE_DIFFERENCES.get(name)
    if diff is None:
        assert gearshift_lines == gearmand_lines
    else:
        assert diff.gearmand_shows in gearmand_lines, (
            "gearmand no longer shows the 1.1.20 behaviour this difference is about",
            gearmand_lines,
        )
        assert gearmand_lines != list(diff.gearshift)
        assert gearshift_lines == list(diff.gearshift), diff.reason


_DETERMINISM_SAMPLE = [c.name for c in CONVERSATIONS if not _timed(c)]


def test_gearmand_transcripts_are_deterministic(make_gearmand: ServerFactory) -> None:
    """gearmand against gearmand: the normaliser leaves no run-to-run noise."""
    _require_gearmand()
    for name in _DETERMINISM_SAMPLE[::3]:
        conv = _BY_NAME[name]
        first = _play_on(make_gearmand, conv)
        second = _play_on(make_gearmand, conv)
        assert first == second, name


# --- coverage of the scripts


def test_every_packet_type_is_sent() -> None:
    sent: set[int] = set()
    for conv in CONVERSATIONS:
        sent |= sent_packet_types(conv.steps)
    missing = set(range(0, 44)) - sent
    assert not missing, f"packet types never sent: {sorted(missing)}"
    assert any(t >= 2**31 for t in sent)


def test_every_magic_is_sent() -> None:
    magics: set[bytes] = set()
    for conv in CONVERSATIONS:
        magics |= sent_magics(conv.steps)
    assert {REQ, RES} <= magics
    assert magics - {REQ, RES}, "no bad magic"


ADMIN_COMMANDS = {
    "status",
    "prioritystatus",
    "workers",
    "show jobs",
    "show unique jobs",
    "cancel job",
    "create function",
    "drop function",
    "maxqueue",
    "getpid",
    "verbose",
    "version",
    "shutdown",
    "show",
    "cancel",
    "create",
    "drop",
    "<empty>",
    "bogus",
}


def test_every_admin_command_is_sent() -> None:
    used: set[str] = set()
    for conv in CONVERSATIONS:
        used |= admin_commands(conv.steps)
    missing = ADMIN_COMMANDS - used
    assert not missing, f"admin commands never sent: {sorted(missing)}"
    # case-insensitivity and the too-many-tokens rule are exercised too
    lines = [s.line for c in CONVERSATIONS for s in c.steps if isinstance(s, Admin)]
    assert any(re.match(rb"[A-Z]+", line) for line in lines)
    assert any(len(line.split()) > 5 for line in lines)


def test_deliberate_differences_are_known_and_documented() -> None:
    text = DOCS.read_text()
    for name, diff in DELIBERATE_DIFFERENCES.items():
        assert name in _BY_NAME, name
        assert diff.reason
        assert f"`{name}`" in text, f"{name} is not listed in docs/differences.md"


# --- the normaliser itself


def test_normaliser_numbers_handles_by_first_appearance() -> None:
    norm = _Normaliser()
    assert norm(b"H:vm:7") == b"H:#1"
    assert norm(b"x H:other-host.example:3 H:vm:7") == b"x H:#2 H:#1"


def test_admin_normalisation_sorts_lists_and_hides_fds_pids_versions() -> None:
    norm = _Normaliser()
    workers = [b"38 127.0.0.1 w : f\n", b"12 127.0.0.1 - :\n", b".\n"]
    assert _normalise_admin([b"workers"], workers, norm) == [
        repr(b"<fd> 127.0.0.1 - :\n"),
        repr(b"<fd> 127.0.0.1 w : f\n"),
        repr(b".\n"),
    ]
    assert _normalise_admin([b"getpid"], [b"OK 4242\n"], norm) == [repr(b"OK <pid>\n")]
    assert _normalise_admin([b"version"], [b"OK 1.1.20+ds\n"], norm) == [repr(b"OK <version>\n")]
    assert _normalise_admin([b"status"], [b"b\t1\n", b"a\t2\n", b".\n"], norm)[0] == repr(b"a\t2\n")


def test_sent_bytes_are_rendered_as_the_server_parses_them() -> None:
    norm = _Normaliser()
    packet = struct.pack(">4sII", REQ, 7, 8) + b"f\0u\0a\0b\0"
    assert render_sent(packet, norm) == ["SUBMIT_JOB(b'f', b'u', b'a\\x00b\\x00')"]
    assert render_sent(struct.pack(">4sII", REQ, 7, 1) + b"f", norm)[0].startswith("RAW ")
    assert render_sent(b"status\r\n", norm) == ["TEXT b'status\\r\\n'"]


def test_normaliser_keeps_coalescing_visible() -> None:
    """Renaming handles must not hide whether two submits got the same job."""
    same, fresh = _Normaliser(), _Normaliser()
    coalesced = [same(b"H:vm:1"), same(b"H:vm:1")]
    separate = [fresh(b"H:vm:1"), fresh(b"H:vm:2")]
    assert coalesced == [b"H:#1", b"H:#1"]
    assert separate == [b"H:#1", b"H:#2"]
