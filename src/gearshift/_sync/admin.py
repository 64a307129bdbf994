"""AdminClient: the blocking face of AsyncAdminClient."""

from __future__ import annotations

from typing import Any

from gearshift._async.admin import AsyncAdminClient
from gearshift._sync.portal import Portal, PortalOwner, twin_arguments
from gearshift.protocol.adminreplies import (
    ClusterMember,
    FunctionStatus,
    JobInfo,
    PriorityStatus,
    StoredJobInfo,
    StoreInfo,
    WorkerInfo,
)


class AdminClient(PortalOwner):
    """Blocking admin client for one server; see AsyncAdminClient for the details.

    Args:
        server: ``"host:port"``; None reads ``GEARMAN_SERVERS`` and uses its first entry.
        connect_timeout: seconds allowed for connecting.
        timeout: seconds allowed for each reply; None waits forever.
        tls: as for AsyncClient: None, True, a CA path, TLSFiles or an SSLContext.
    """

    @twin_arguments(AsyncAdminClient)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._async: AsyncAdminClient = AsyncAdminClient(*args, **kwargs)
        self.server = self._async.server
        self._portal = Portal("gearshift-admin")

    def command(self, command: str) -> list[str]:
        """Send one admin command; return its reply lines (``ERR`` lines are not raised)."""
        return self._portal.call(self._async.command, command)

    def raw(self, command: str) -> list[str]:
        """Send any admin command; return the reply lines as the server wrote them."""
        return self._portal.call(self._async.raw, command)

    def status(self) -> list[FunctionStatus]:
        """``status``: per function, jobs queued+running, running, and workers."""
        return self._portal.call(self._async.status)

    def priority_status(self) -> list[PriorityStatus]:
        """``prioritystatus``: per function, queued jobs by priority, and workers."""
        return self._portal.call(self._async.priority_status)

    def workers(self) -> list[WorkerInfo]:
        """``workers``: every connection with its client id and functions."""
        return self._portal.call(self._async.workers)

    def show_jobs(self) -> list[JobInfo]:
        """``show jobs``: every job the server holds."""
        return self._portal.call(self._async.show_jobs)

    def show_unique_jobs(self) -> list[str]:
        """``show unique jobs``: the unique id of every job."""
        return self._portal.call(self._async.show_unique_jobs)

    def show_stored_jobs(self, limit: int = 1000) -> list[StoredJobInfo]:
        """``show stored jobs N`` (gearshift): up to ``limit`` jobs from the durable queue."""
        return self._portal.call(self._async.show_stored_jobs, limit)

    def show_store(self) -> StoreInfo:
        """``show store`` (gearshift): the durable queue the server uses."""
        return self._portal.call(self._async.show_store)

    def cluster(self) -> list[ClusterMember]:
        """``cluster`` (gearshift): the servers sharing the store, with their leases."""
        return self._portal.call(self._async.cluster)

    def version(self) -> str:
        """``version``: the server's version string."""
        return self._portal.call(self._async.version)

    def getpid(self) -> int:
        """``getpid``: the server's process id."""
        return self._portal.call(self._async.getpid)

    def verbose(self) -> str:
        """``verbose``: the server's log level name."""
        return self._portal.call(self._async.verbose)

    def cancel_job(self, handle: str) -> None:
        """``cancel job H``; raises UnknownJob for an unknown handle."""
        self._portal.call(self._async.cancel_job, handle)

    def create_function(self, function: str) -> None:
        """``create function F`` (get-or-create)."""
        self._portal.call(self._async.create_function, function)

    def drop_function(self, function: str) -> None:
        """``drop function F``; raises ServerError if it is unknown or busy."""
        self._portal.call(self._async.drop_function, function)

    def maxqueue(self, function: str, size: int | tuple[int, int, int] | None = None) -> None:
        """``maxqueue F [N | H N L]``: limit the queue (0 or less = unlimited, None = reset)."""
        self._portal.call(self._async.maxqueue, function, size)

    def shutdown(self, graceful: bool = False) -> None:
        """``shutdown [graceful]``; gearmand >= 1.1.15 raises InvalidCommand."""
        self._portal.call(self._async.shutdown, graceful)
