"""Optional services plugged into a server: the HTTP listener, the cluster.

The core server (``server.GearmanServer``, its connections and the scheduler) knows
only this interface, so it imports neither the HTTP stack nor the cluster runner;
``gearshift.build.build_server`` (used by the CLI and ``gearshift.testing``) plugs them in.  A
service may add admin commands to ``server.admin`` in ``prepare``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gearshift.server.server import GearmanServer


class Service(Protocol):
    """Something that runs beside a server, from its start to its end.

    The server calls, in this order: ``prepare`` before the store opens, ``start``
    once the server listens, ``stop`` when its shutdown begins (the listeners are
    closing: stop taking work from outside), and ``close`` at the very end, before the
    store closes.  ``stop`` and ``close`` run in the reverse order of the services'.
    """

    def prepare(self, server: GearmanServer) -> None: ...

    async def start(self, server: GearmanServer) -> None: ...

    async def stop(self) -> None: ...

    async def close(self) -> None: ...


__all__ = ["Service"]
