"""The durable-queue interface every store implements.

A store is a log of background jobs, as in gearmand: the server calls ``add`` before
it sends JOB_CREATED (and sends it only once ``add`` has returned, i.e. the job is
durable), ``done`` when the job completes, fails, is cancelled or is dropped, and
``replay`` once at start-up, before the listener opens.  Foreground jobs never reach
a store.  A store that fails raises ``StoreError``; the server then answers the
submit with ``ERROR QUEUE_ERROR`` and keeps serving.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from gearshift.protocol.packets import Priority


@dataclass(slots=True)
class StoredJob:
    """A background job as a store keeps it."""

    function: bytes
    unique: bytes
    data: bytes
    priority: Priority = Priority.NORMAL
    #: Unix time before which the job must not run (SUBMIT_JOB_EPOCH); 0 = now.
    when: int = 0
    #: Set by the store in ``add`` (or ``replay``); handed back to ``done``.  Opaque.
    key: object = field(default=None, compare=False)


class Store(abc.ABC):
    """A persistent queue of background jobs."""

    #: Short name for logs and admin output ("memory", "sqlite", ...).
    name: str = "store"
    #: False for the memory store: the server then skips add/done entirely.
    persistent: bool = True

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect / create tables.  Called once before ``replay``."""

    @abc.abstractmethod
    async def add(self, job: StoredJob) -> None:
        """Make ``job`` durable; return only once it is.  Sets ``job.key``.

        Raises:
            StoreError: the job could not be stored; it must not be acknowledged.
        """

    @abc.abstractmethod
    async def done(self, job: StoredJob) -> None:
        """Forget ``job`` (it completed, failed, was cancelled or dropped)."""

    @abc.abstractmethod
    def replay(self) -> AsyncIterator[StoredJob]:
        """Yield every stored job, oldest first, with ``key`` set."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and release resources."""

    def describe(self) -> str:
        """One line for logs and admin output, without secrets."""
        return self.name
