"""MultiAdmin: the blocking face of AsyncMultiAdmin."""

from __future__ import annotations

from typing import Any

from gearshift._async.multiadmin import AsyncMultiAdmin
from gearshift._sync.portal import Portal, PortalOwner, twin_arguments
from gearshift.addresses import ServerAddress
from gearshift.errors import GearmanError
from gearshift.protocol.adminreplies import FunctionStatus, JobInfo, PriorityStatus, WorkerInfo


class MultiAdmin(PortalOwner):
    """Blocking admin commands for several servers at once; see AsyncMultiAdmin.

    Each method returns a dict from server to that server's answer, or to the
    ``GearmanError`` it raised.

    Args:
        servers: ``"h1:4730,h2:4731"``, a list, or None for ``GEARMAN_SERVERS``.
        connect_timeout, timeout, tls: as for AdminClient, for every server.
    """

    @twin_arguments(AsyncMultiAdmin)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._async: AsyncMultiAdmin = AsyncMultiAdmin(*args, **kwargs)
        self.servers = self._async.servers
        self._portal = Portal("gearshift-multiadmin")

    errors = staticmethod(AsyncMultiAdmin.errors)

    def command(self, command: str) -> dict[ServerAddress, list[str] | GearmanError]:
        """Send one admin command everywhere; reply lines per server."""
        return self._portal.call(self._async.command, command)

    def status(self) -> dict[ServerAddress, list[FunctionStatus] | GearmanError]:
        return self._portal.call(self._async.status)

    def priority_status(self) -> dict[ServerAddress, list[PriorityStatus] | GearmanError]:
        return self._portal.call(self._async.priority_status)

    def workers(self) -> dict[ServerAddress, list[WorkerInfo] | GearmanError]:
        return self._portal.call(self._async.workers)

    def show_jobs(self) -> dict[ServerAddress, list[JobInfo] | GearmanError]:
        return self._portal.call(self._async.show_jobs)

    def show_unique_jobs(self) -> dict[ServerAddress, list[str] | GearmanError]:
        return self._portal.call(self._async.show_unique_jobs)

    def version(self) -> dict[ServerAddress, str | GearmanError]:
        return self._portal.call(self._async.version)

    def getpid(self) -> dict[ServerAddress, int | GearmanError]:
        return self._portal.call(self._async.getpid)

    def verbose(self) -> dict[ServerAddress, str | GearmanError]:
        return self._portal.call(self._async.verbose)

    def create_function(self, function: str) -> dict[ServerAddress, None | GearmanError]:
        return self._portal.call(self._async.create_function, function)

    def drop_function(self, function: str) -> dict[ServerAddress, None | GearmanError]:
        return self._portal.call(self._async.drop_function, function)

    def maxqueue(
        self, function: str, size: int | tuple[int, int, int] | None = None
    ) -> dict[ServerAddress, None | GearmanError]:
        return self._portal.call(self._async.maxqueue, function, size)

    def cancel_job(self, handle: str) -> dict[ServerAddress, None | GearmanError]:
        return self._portal.call(self._async.cancel_job, handle)

    def shutdown(self, graceful: bool = False) -> dict[ServerAddress, None | GearmanError]:
        return self._portal.call(self._async.shutdown, graceful)

    def total_status(self) -> list[FunctionStatus]:
        """``status`` added up per function over the servers that answered."""
        return self._portal.call(self._async.total_status)

    def total_priority_status(self) -> list[PriorityStatus]:
        """``prioritystatus`` added up per function over the servers that answered."""
        return self._portal.call(self._async.total_priority_status)


__all__ = ["MultiAdmin"]
