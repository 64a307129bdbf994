"""The one admin command table: longest match first, a handler may pass to a shorter
one, services add commands, the access rules come first.  No sockets."""

from __future__ import annotations

from gearshift.protocol import admin as text
from gearshift.server.admin import AdminCommands, AdminHost, Reply
from gearshift.server.model import Peer
from gearshift.server.scheduler import Scheduler
from tests.server.fakes import make, peer


class Host:
    """Just enough of a server for the admin commands."""

    version = "9.9"
    verbose = "ERROR"

    def __init__(self, sched: Scheduler, *, may_change: bool = True) -> None:
        self.scheduler = sched
        self._may_change = may_change
        self.shutdowns: list[bool] = []

    def getpid(self) -> int:
        return 42

    def may_shutdown(self, peer: Peer) -> bool:
        return self._may_change

    def may_change(self, peer: Peer) -> bool:
        return self._may_change

    def request_shutdown(self, graceful: bool) -> None:
        self.shutdowns.append(graceful)


def run(table: AdminCommands, host: Host, line: bytes) -> Reply:
    s = host.scheduler
    return table.run(host, peer(s), line.split())


def test_core_commands_answer_as_gearmand() -> None:
    s, _ = make()
    host = Host(s)
    table = AdminCommands()
    assert run(table, host, b"VERSION") == text.ok_value(b"9.9")
    assert run(table, host, b"getpid") == text.ok_value(b"42")
    assert run(table, host, b"show") == text.unknown_command(b"show")  # too short
    assert run(table, host, b"show nothing") == text.ERR_UNKNOWN_SHOW_ARGUMENTS
    assert run(table, host, b"cancel job H:none") == text.ERR_UNKNOWN_JOB
    assert run(table, host, b"frobnicate") == text.unknown_command(b"frobnicate")
    assert run(table, host, b"shutdown graceful") == text.OK and host.shutdowns == [True]


def test_a_service_command_wins_and_may_pass_to_the_core_one() -> None:
    s, _ = make()
    host = Host(s)
    table = AdminCommands()

    def store(h: AdminHost, p: Peer, tokens: list[bytes]) -> Reply | None:
        return b"STORE\n" if len(tokens) == 2 else None

    table.add("show store", store)
    assert run(table, host, b"Show Store") == b"STORE\n"
    # Not its arguments: the core "show" answers.
    assert run(table, host, b"show store now") == text.ERR_UNKNOWN_SHOW_ARGUMENTS
    assert run(table, host, b"show jobs") == b".\n"


def test_state_changes_are_refused_before_any_handler_runs() -> None:
    s, _ = make()
    host = Host(s, may_change=False)
    table = AdminCommands()
    called: list[bytes] = []
    table.add("drop", lambda h, p, t: called.append(t[0]) or text.OK)
    reply = run(table, host, b"drop function f")
    assert isinstance(reply, bytes) and reply.startswith(b"ERR PERMISSION_DENIED")
    assert called == []
    # shutdown is a state change too.
    assert (
        run(table, host, b"shutdown") == b"ERR PERMISSION_DENIED Permission+denied+for+shutdown\r\n"
    )
