"""AsyncMultiAdmin: one admin command sent to several servers at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gearshift._async.admin import AsyncAdminClient
from gearshift._async.closing import AsyncClosing
from gearshift.addresses import ServerAddress, ServersArg, parse_servers
from gearshift.errors import GearmanError
from gearshift.protocol.adminreplies import (
    FunctionStatus,
    JobInfo,
    PriorityStatus,
    WorkerInfo,
    sum_by_name,
)
from gearshift.tls import TLSArg, client_context

T = TypeVar("T")


class AsyncMultiAdmin(AsyncClosing):
    """Admin commands for several servers, sent to all of them concurrently.

    Each method returns a dict from server to that server's answer, in the order the
    servers were given.  A server that cannot be reached, or that refuses the
    command, gives the ``GearmanError`` it raised as its value instead of hiding the
    others' answers; ``errors()`` picks those out.  ``total_status()`` and
    ``total_priority_status()`` add the servers' rows up per function.

    Args:
        servers: as for AsyncClient: ``"h1:4730,h2:4731"``, a list, or None for
            ``GEARMAN_SERVERS``.
        connect_timeout, timeout, tls: as for AsyncAdminClient, for every server.
    """

    def __init__(
        self,
        servers: ServersArg | None = None,
        *,
        connect_timeout: float | None = 10.0,
        timeout: float | None = 30.0,
        tls: TLSArg = None,
    ) -> None:
        self.servers = parse_servers(servers)
        context = client_context(tls)  # read the certificate files once, not per server
        self.admins: dict[ServerAddress, AsyncAdminClient] = {
            server: AsyncAdminClient(
                server, connect_timeout=connect_timeout, timeout=timeout, tls=context
            )
            for server in self.servers
        }

    async def aclose(self) -> None:
        """Close every connection."""
        await asyncio.gather(*(admin.aclose() for admin in self.admins.values()))

    async def fan_out(
        self, call: Callable[[AsyncAdminClient], Awaitable[T]]
    ) -> dict[ServerAddress, T | GearmanError]:
        """Run ``call`` against every server at once; each answer or GearmanError."""

        async def one(admin: AsyncAdminClient) -> T | GearmanError:
            try:
                return await call(admin)
            except GearmanError as exc:
                return exc

        answers = await asyncio.gather(*(one(admin) for admin in self.admins.values()))
        return dict(zip(self.admins, answers, strict=True))

    @staticmethod
    def errors(answers: dict[ServerAddress, T | GearmanError]) -> dict[ServerAddress, GearmanError]:
        """The servers of ``answers`` that failed, with their errors."""
        return {s: a for s, a in answers.items() if isinstance(a, GearmanError)}

    # -- the AdminClient commands, fanned out --------------------------------------------

    async def command(self, command: str) -> dict[ServerAddress, list[str] | GearmanError]:
        """Send one admin command everywhere; reply lines per server (``ERR`` not raised)."""
        return await self.fan_out(lambda admin: admin.command(command))

    async def status(self) -> dict[ServerAddress, list[FunctionStatus] | GearmanError]:
        return await self.fan_out(AsyncAdminClient.status)

    async def priority_status(self) -> dict[ServerAddress, list[PriorityStatus] | GearmanError]:
        return await self.fan_out(AsyncAdminClient.priority_status)

    async def workers(self) -> dict[ServerAddress, list[WorkerInfo] | GearmanError]:
        return await self.fan_out(AsyncAdminClient.workers)

    async def show_jobs(self) -> dict[ServerAddress, list[JobInfo] | GearmanError]:
        return await self.fan_out(AsyncAdminClient.show_jobs)

    async def show_unique_jobs(self) -> dict[ServerAddress, list[str] | GearmanError]:
        return await self.fan_out(AsyncAdminClient.show_unique_jobs)

    async def version(self) -> dict[ServerAddress, str | GearmanError]:
        return await self.fan_out(AsyncAdminClient.version)

    async def getpid(self) -> dict[ServerAddress, int | GearmanError]:
        return await self.fan_out(AsyncAdminClient.getpid)

    async def verbose(self) -> dict[ServerAddress, str | GearmanError]:
        return await self.fan_out(AsyncAdminClient.verbose)

    async def create_function(self, function: str) -> dict[ServerAddress, None | GearmanError]:
        return await self.fan_out(lambda admin: admin.create_function(function))

    async def drop_function(self, function: str) -> dict[ServerAddress, None | GearmanError]:
        return await self.fan_out(lambda admin: admin.drop_function(function))

    async def maxqueue(
        self, function: str, size: int | tuple[int, int, int] | None = None
    ) -> dict[ServerAddress, None | GearmanError]:
        return await self.fan_out(lambda admin: admin.maxqueue(function, size))

    async def cancel_job(self, handle: str) -> dict[ServerAddress, None | GearmanError]:
        """``cancel job H`` everywhere: the server holding the handle answers None,
        the others UnknownJob."""
        return await self.fan_out(lambda admin: admin.cancel_job(handle))

    async def shutdown(self, graceful: bool = False) -> dict[ServerAddress, None | GearmanError]:
        return await self.fan_out(lambda admin: admin.shutdown(graceful))

    # -- sums over the servers ----------------------------------------------------------

    async def total_status(self) -> list[FunctionStatus]:
        """``status`` added up per function over the servers that answered, by name.

        Raises:
            GearmanError: no server answered (the first server's error).
        """
        rows = sum_by_name(_answered(await self.status()))
        return sorted(rows, key=lambda r: r.name)

    async def total_priority_status(self) -> list[PriorityStatus]:
        """``prioritystatus`` added up per function over the servers that answered.

        Raises:
            GearmanError: no server answered (the first server's error).
        """
        rows = sum_by_name(_answered(await self.priority_status()))
        return sorted(rows, key=lambda r: r.name)


def _answered(answers: dict[ServerAddress, T | GearmanError]) -> list[T]:
    """The answers that are not errors; raises the first error if there are none."""
    ok: list[T] = []
    first_error: GearmanError | None = None
    for answer in answers.values():
        if isinstance(answer, GearmanError):
            first_error = first_error or answer
        else:
            ok.append(answer)
    if not ok and first_error is not None:
        raise first_error
    return ok


__all__ = ["AsyncMultiAdmin"]
