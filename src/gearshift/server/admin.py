"""The admin text protocol: every command in one table, with gearmand's exact output.

``AdminCommands`` maps a command (one to three words, matched case-insensitively; the
longest match wins) to its handler.  The server registers the core commands below;
optional services add theirs (the cluster service adds ``cluster``, ``show store`` and
``show stored jobs``), so the connection only ever asks the table.

A handler returns the reply bytes, a coroutine for a reply that needs the store (the
connection keeps later replies behind it), or None: "not mine", and the next shorter
match is tried, down to ``ERR UNKNOWN_COMMAND``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from gearshift.protocol import admin as text
from gearshift.server.access import PROTECTED_ADMIN
from gearshift.server.model import HIGH, LOW, NORMAL, Peer
from gearshift.server.scheduler import Scheduler, atoi

logger = logging.getLogger(__name__)

#: A reply now, or one that needs the store first.
Reply = bytes | Coroutine[Any, Any, bytes]


class AdminHost(Protocol):
    """What admin commands need from the server."""

    @property
    def scheduler(self) -> Scheduler: ...

    @property
    def version(self) -> str: ...

    @property
    def verbose(self) -> str: ...

    def getpid(self) -> int: ...

    def may_shutdown(self, peer: Peer) -> bool: ...

    def may_change(self, peer: Peer) -> bool: ...

    def request_shutdown(self, graceful: bool) -> None: ...


#: ``handler(host, peer, tokens)``: the reply, or None to let a shorter match answer.
Command = Callable[[AdminHost, Peer, list[bytes]], Reply | None]


class AdminCommands:
    """The admin command table of one server."""

    __slots__ = ("_table",)

    def __init__(self) -> None:
        self._table: dict[tuple[bytes, ...], Command] = {}
        for words, handler in _CORE.items():
            self.add(words, handler)

    def add(self, words: str, handler: Command) -> None:
        """Register ``handler`` for the command ``words`` (e.g. ``"show store"``)."""
        key = tuple(w.encode().lower() for w in words.split())
        if not 1 <= len(key) <= 3:
            raise ValueError(f"an admin command is one to three words, not {words!r}")
        self._table[key] = handler

    def run(self, host: AdminHost, peer: Peer, tokens: list[bytes]) -> Reply:
        """Run one admin command (already split into at most five tokens)."""
        if not tokens:
            return text.unknown_command(b"")
        cmd = tokens[0]
        words = tuple(t.lower() for t in tokens[:3])
        if words[0] in PROTECTED_ADMIN and not host.may_change(peer):
            # Access rules (gearshift.server.access): state changes need loopback or an
            # identity.
            logger.warning("refused admin %r from %s (identity %s)", cmd, peer.host, peer.identity)
            return b"ERR PERMISSION_DENIED Permission+denied+for+" + cmd + b"\r\n"
        table = self._table
        for n in range(len(words), 0, -1):
            handler = table.get(words[:n])
            if handler is not None:
                reply = handler(host, peer, tokens)
                if reply is not None:
                    return reply
        return text.unknown_command(cmd)


# ---------------------------------------------------------------------- core commands


def _status(host: AdminHost, peer: Peer, tokens: list[bytes]) -> Reply | None:
    return text.render_status(
        (f.name, f.total, f.running, f.workers) for f in host.scheduler.functions.values()
    )


def _priority_status(host: AdminHost, peer: Peer, tokens: list[bytes]) -> Reply | None:
    return text.render_priority_status(
        (f.name, f.queued(HIGH), f.queued(NORMAL), f.queued(LOW), f.workers)
        for f in host.scheduler.functions.values()
    )


def _workers(host: AdminHost, peer: Peer, tokens: list[bytes]) -> Reply | None:
    return text.render_workers(
        (p.fd, p.host.encode(), p.client_id, [f.name for f in reversed(p.abilities)])
        for p in host.scheduler.peers
    )


def _cancel(host: AdminHost, peer: Peer, tokens: list[bytes]) -> Reply | None:
    if len(tokens) < 3:
        return None
    if len(tokens) == 3 and tokens[1].lower() == b"job":
        return text.OK if host.scheduler.cancel(tokens[2]) else text.ERR_UNKNOWN_JOB
    return text.ERR_UNKNOWN_ERROR


def _show(host: AdminHost, peer: Peer, tokens: list[bytes]) -> Reply | None:
    argc = len(tokens)
    if argc < 2:
        return None
    sched = host.scheduler
    if argc == 3 and tokens[1].lower() == b"unique" and tokens[2].lower() == b"jobs":
        return text.render_rows((job.unique,) for job in sched.handles.values())
    if argc == 2 and tokens[1].lower() == b"jobs":
        return text.render_rows(
            (
                job.handle,
                str(job.retries).encode(),
                b"1" if job.ignore else b"0",
                b"1" if job.queued_flag else b"0",
            )
            for job in sched.handles.values()
        )
    return text.ERR_UNKNOWN_SHOW_ARGUMENTS


def _create(host: AdminHost, peer: Peer, tokens: list[bytes]) -> Reply | None:
    if len(tokens) == 3 and tokens[1].lower() == b"function":
        # Listed until it has been idle through two housekeeping passes, like any
        # other: unless access rules are on, anyone may create functions.
        sched = host.scheduler
        sched.note_idle(sched.function(tokens[2]))
        return text.OK
    return text.invalid_arguments(tokens[0])


def _drop(host: AdminHost, peer: Peer, tokens: list[bytes]) -> Reply | None:
    if len(tokens) == 3 and tokens[1].lower() == b"function":
        sched = host.scheduler
        wanted = tokens[2].lower()
        for f in sched.functions.values():
            if f.name.lower() == wanted:
                # Unlike gearmand, queued jobs also keep a function alive: dropping it
                # would lose them.
                if f.workers or f.running or f.total:
                    return text.ERR_FUNCTION_BUSY
                sched.drop_function(f)
                return text.OK
        return text.ERR_FUNCTION_NOT_FOUND
    return text.invalid_arguments(tokens[0])


def _maxqueue(host: AdminHost, peer: Peer, tokens: list[bytes]) -> Reply | None:
    argc = len(tokens)
    if argc == 1:
        return text.invalid_arguments(tokens[0])
    sizes = [max(0, atoi(tokens[i + 2])) if argc > i + 2 else 0 for i in range(3)]
    if argc <= 3:
        sizes[1] = sizes[2] = sizes[0]
    sched = host.scheduler
    target = sched.functions.get(tokens[1])
    if target is not None:
        target.maxqueue = sizes
        sched.note_idle(target)
    return text.OK


def _getpid(host: AdminHost, peer: Peer, tokens: list[bytes]) -> Reply | None:
    return text.ok_value(str(host.getpid()).encode())


def _verbose(host: AdminHost, peer: Peer, tokens: list[bytes]) -> Reply | None:
    return text.ok_value(host.verbose.encode())


def _version(host: AdminHost, peer: Peer, tokens: list[bytes]) -> Reply | None:
    return text.ok_value(host.version.encode())


def _shutdown(host: AdminHost, peer: Peer, tokens: list[bytes]) -> Reply | None:
    if not host.may_shutdown(peer):
        return None  # as gearmand: an unknown command to those who may not
    argc = len(tokens)
    if argc == 1:
        host.request_shutdown(False)
        return text.OK
    if argc == 2 and tokens[1].lower() == b"graceful":
        host.request_shutdown(True)
        return text.OK
    return text.invalid_arguments(tokens[0])


_CORE: dict[str, Command] = {
    "status": _status,
    "prioritystatus": _priority_status,
    "workers": _workers,
    "cancel": _cancel,
    "show": _show,
    "create": _create,
    "drop": _drop,
    "maxqueue": _maxqueue,
    "getpid": _getpid,
    "verbose": _verbose,
    "version": _version,
    "shutdown": _shutdown,
}


__all__ = ["AdminCommands", "AdminHost", "Command", "Reply"]
