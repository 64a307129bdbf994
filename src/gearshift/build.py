"""A server with the optional services its configuration asks for.

The one place that knows which services exist: the CLI and ``gearshift.testing`` both
build their servers here, so the core server imports neither the HTTP stack nor the
cluster runner.
"""

from __future__ import annotations

from gearshift.server.cluster import ClusterService
from gearshift.server.config import ServerConfig
from gearshift.server.server import GearmanServer
from gearshift.server.service import Service
from gearshift.store import Store


def services_for(config: ServerConfig) -> list[Service]:
    """The services ``config`` asks for: the store's (admin commands, and the cluster
    when the store is clustered) always; the HTTP listener when enabled."""
    services: list[Service] = [ClusterService()]
    if config.http:
        # Imported only here: aiohttp is an optional extra.
        from gearshift.http import HttpService

        services.append(HttpService())
    return services


def build_server(
    config: ServerConfig | None = None, *, store: Store | None = None
) -> GearmanServer:
    """A ``GearmanServer`` for ``config``, its services plugged in (not started)."""
    config = config or ServerConfig()
    return GearmanServer(config, store=store, services=services_for(config))


__all__ = ["build_server", "services_for"]
