"""Admin command execution over the scheduler's state, with gearmand's exact output."""

from __future__ import annotations

import logging
from typing import Protocol

from gearshift.protocol import admin as text
from gearshift.server.access import PROTECTED_ADMIN
from gearshift.server.jobs import HIGH, LOW, NORMAL, Peer, Scheduler, atoi

logger = logging.getLogger(__name__)


class AdminHost(Protocol):
    """What admin commands need from the server beyond the scheduler."""

    @property
    def version(self) -> str: ...

    @property
    def verbose(self) -> str: ...

    def getpid(self) -> int: ...

    def may_shutdown(self, peer: Peer) -> bool: ...

    def may_change(self, peer: Peer) -> bool: ...

    def request_shutdown(self, graceful: bool) -> None: ...


def execute(sched: Scheduler, host: AdminHost, peer: Peer, tokens: list[bytes]) -> bytes:
    """Run one admin command (already split into at most five tokens); return the reply."""
    if not tokens:
        return text.unknown_command(b"")
    cmd = tokens[0]
    name = cmd.lower()
    argc = len(tokens)
    if name in PROTECTED_ADMIN and not host.may_change(peer):
        # Access rules (gearshift.server.access): state changes need loopback or an identity.
        logger.warning("refused admin %r from %s (identity %s)", cmd, peer.host, peer.identity)
        return b"ERR PERMISSION_DENIED Permission+denied+for+" + cmd + b"\r\n"
    if name == b"status":
        return text.render_status(
            (f.name, f.total, f.running, f.workers) for f in sched.functions.values()
        )
    if name == b"prioritystatus":
        return text.render_priority_status(
            (f.name, f.queued(HIGH), f.queued(NORMAL), f.queued(LOW), f.workers)
            for f in sched.functions.values()
        )
    if name == b"workers":
        return text.render_workers(
            (
                p.fd,
                p.host.encode(),
                p.client_id,
                [f.name for f in reversed(p.abilities)],
            )
            for p in sched.peers
        )
    if name == b"cancel" and argc >= 3:
        if argc == 3 and tokens[1].lower() == b"job":
            return text.OK if sched.cancel(tokens[2]) else text.ERR_UNKNOWN_JOB
        return text.ERR_UNKNOWN_ERROR
    if name == b"show" and argc >= 2:
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
    if name == b"create":
        if argc == 3 and tokens[1].lower() == b"function":
            # Listed until it has been idle through two housekeeping passes, like any
            # other: unless access rules are on, anyone may create functions.
            sched.note_idle(sched.function(tokens[2]))
            return text.OK
        return text.invalid_arguments(cmd)
    if name == b"drop":
        if argc == 3 and tokens[1].lower() == b"function":
            wanted = tokens[2].lower()
            for f in sched.functions.values():
                if f.name.lower() == wanted:
                    # Unlike gearmand, queued jobs also keep a function alive:
                    # dropping it would lose them.
                    if f.workers or f.running or f.total:
                        return text.ERR_FUNCTION_BUSY
                    sched.drop_function(f)
                    return text.OK
            return text.ERR_FUNCTION_NOT_FOUND
        return text.invalid_arguments(cmd)
    if name == b"maxqueue":
        if argc == 1:
            return text.invalid_arguments(cmd)
        sizes = [max(0, atoi(tokens[i + 2])) if argc > i + 2 else 0 for i in range(3)]
        if argc <= 3:
            sizes[1] = sizes[2] = sizes[0]
        target = sched.functions.get(tokens[1])
        if target is not None:
            target.maxqueue = sizes
            sched.note_idle(target)
        return text.OK
    if name == b"getpid":
        return text.ok_value(str(host.getpid()).encode())
    if name == b"verbose":
        return text.ok_value(host.verbose.encode())
    if name == b"version":
        return text.ok_value(host.version.encode())
    if name == b"shutdown" and host.may_shutdown(peer):
        if argc == 1:
            host.request_shutdown(False)
            return text.OK
        if argc == 2 and tokens[1].lower() == b"graceful":
            host.request_shutdown(True)
            return text.OK
        return text.invalid_arguments(cmd)
    return text.unknown_command(cmd)
