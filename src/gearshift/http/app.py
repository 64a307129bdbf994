"""The HTTP listener: job submission, ``/metrics``, ``/api/*`` and the dashboard.

Routes (GET unless named):

=================================  =====================================================
``/``                              the dashboard (static files under ``/dashboard/``)
``/metrics``                       Prometheus text format
``/api/status``                    server, functions, counters
``/api/workers``                   registered workers (``?all=1``: every connection)
``/api/jobs``                      jobs (``?function=f&limit=n``)
``/api/jobs/{handle}``             one job; ``DELETE`` cancels it (authorised callers)
``/api/events``                    server-sent events: a dashboard frame per interval
``/api/store``                     the durable queue in use (``server/cluster.py``)
``/api/store/jobs``                jobs the store holds (``?limit=n``, default 1000)
``/api/cluster``                   cluster members, leases, jobs per owner (404: none)
``/favicon.ico``                   204 (so that a browser does not submit a job)
``GET|POST|PUT /{function}``       gearmand's HTTP job submission (``gateway``)
=================================  =====================================================

A function whose name collides with a GET route (``metrics``, ``api/...``) is still
reachable with ``POST``.  As in gearmand, the function name is the request target after
the first ``/``, byte for byte (no percent-decoding, a query string included).

Authorised means: from a loopback address (unless the access rules turn that off), with
a TLS client certificate whose name is in the access rules' ``admin`` list, or with the
rules' ``http_token`` as a bearer token.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gearshift.addresses import is_loopback
from gearshift.errors import ConfigError
from gearshift.http import gateway, metrics, views
from gearshift.server import cluster
from gearshift.tls import peer_identity

if TYPE_CHECKING:
    from gearshift.server.server import GearmanServer

__all__ = ["HttpService", "build_app"]

logger = logging.getLogger(__name__)

_SERVER_KEY = web.AppKey("gearshift_server", object)
#: Dashboard frames per second are capped; a browser asking faster gets this.
_MIN_INTERVAL = 0.2


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(data, separators=(",", ":")),
        content_type="application/json",
    )


def authorised(request: web.Request, server: GearmanServer) -> bool:
    """May this HTTP caller change state (cancel a job)?"""
    policy = server.config.access
    token = policy.http_token
    if token is not None:
        given = request.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return True
    if policy.admin_from_loopback and is_loopback(request.remote or ""):
        return True
    transport = request.transport
    identity = None if transport is None else peer_identity(transport.get_extra_info("peercert"))
    return identity is not None and identity in policy.admin


def _limit(request: web.Request, default: int) -> int:
    try:
        return max(1, min(int(request.query.get("limit", default)), 100_000))
    except ValueError:
        raise web.HTTPBadRequest(text="limit must be an integer\n") from None


def build_app(server: GearmanServer) -> web.Application:
    """The aiohttp application for one GearmanServer."""
    app = web.Application(client_max_size=server.config.max_packet_size)
    registry = metrics.registry_for(server)
    static = resources.files("gearshift.http") / "static"

    async def index(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=(static / "index.html").read_bytes(), content_type="text/html", charset="utf-8"
        )

    async def asset(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        types = {".js": "application/javascript", ".css": "text/css"}
        kind = next((t for ext, t in types.items() if name.endswith(ext)), None)
        item = static / name
        if kind is None or "/" in name or not item.is_file():
            raise web.HTTPNotFound()
        return web.Response(body=item.read_bytes(), content_type=kind, charset="utf-8")

    async def prometheus(request: web.Request) -> web.StreamResponse:
        body = metrics.render(registry)
        return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})

    async def api_status(request: web.Request) -> web.StreamResponse:
        return _json(views.status(server))

    async def api_workers(request: web.Request) -> web.StreamResponse:
        return _json(views.workers(server, all_peers=request.query.get("all") in ("1", "true")))

    async def api_jobs(request: web.Request) -> web.StreamResponse:
        function = request.query.get("function")
        return _json(views.jobs(server, function=function, limit=_limit(request, 1000)))

    async def api_job(request: web.Request) -> web.StreamResponse:
        handle = request.match_info["handle"].encode("utf-8", "surrogateescape")
        sched = server.scheduler
        job = sched.handles.get(handle)
        if request.method == "DELETE":
            if not authorised(request, server):
                logger.warning("refused HTTP cancel of %r from %s", handle, request.remote)
                return _json({"error": "not authorised"}, 403)
            if job is None or not sched.cancel(handle):
                return _json({"error": "unknown job"}, 404)
            sched.flush()
            logger.info("job %s cancelled over HTTP by %s", handle.decode(), request.remote)
            return _json({"cancelled": handle.decode("utf-8", "replace")})
        if job is None:
            return _json({"error": "unknown job"}, 404)
        return _json(views.job_row(job, server.scheduler.clock()))

    async def api_events(request: web.Request) -> web.StreamResponse:
        try:
            interval = max(_MIN_INTERVAL, float(request.query.get("interval", "1")))
        except ValueError:
            raise web.HTTPBadRequest(text="interval must be a number\n") from None
        limit = _limit(request, 100)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        try:
            while True:
                frame = json.dumps(views.snapshot(server, limit), separators=(",", ":"))
                await response.write(f"event: frame\ndata: {frame}\n\n".encode())
                await asyncio.sleep(interval)
        except ConnectionResetError:
            # The browser went away: just end the stream.
            pass
        return response

    async def api_store(request: web.Request) -> web.StreamResponse:
        return _json(cluster.store_view(server))

    async def api_store_jobs(request: web.Request) -> web.StreamResponse:
        try:
            return _json(
                await cluster.stored_jobs_view(server, _limit(request, cluster.STORED_JOBS_DEFAULT))
            )
        except Exception as exc:
            return _json({"error": str(exc)}, 503)

    async def api_cluster(request: web.Request) -> web.StreamResponse:
        node = cluster.node_of(server)
        if node is None:
            return _json({"error": "this server's store is not clustered"}, 404)
        try:
            return _json(await node.snapshot())
        except Exception as exc:
            return _json({"error": str(exc)}, 503)

    async def api_unknown(request: web.Request) -> web.StreamResponse:
        # A typo in an API path must not turn into a job (use POST to reach "api/...").
        return _json({"error": "no such API endpoint"}, 404)

    async def submit(request: web.Request) -> web.StreamResponse:
        return await gateway.submit(request, server)

    async def no_icon(request: web.Request) -> web.StreamResponse:
        # Browsers ask for it unprompted; without this route it would submit a job.
        return web.Response(status=204)

    async def empty_function(request: web.Request) -> web.StreamResponse:
        return web.Response(status=404, text="no function given\n")

    app.router.add_get("/", index)
    app.router.add_get("/dashboard/{name}", asset)
    app.router.add_get("/favicon.ico", no_icon)
    app.router.add_get("/metrics", prometheus)
    app.router.add_route("GET", "/api/status", api_status)
    app.router.add_route("GET", "/api/workers", api_workers)
    app.router.add_route("GET", "/api/jobs", api_jobs)
    app.router.add_route("GET", "/api/events", api_events)
    app.router.add_route("GET", "/api/jobs/{handle}", api_job)
    app.router.add_route("GET", "/api/store", api_store)
    app.router.add_route("GET", "/api/store/jobs", api_store_jobs)
    app.router.add_route("GET", "/api/cluster", api_cluster)
    app.router.add_route("DELETE", "/api/jobs/{handle}", api_job)
    app.router.add_get("/api/{rest:.*}", api_unknown)
    for method in ("POST", "PUT"):
        app.router.add_route(method, "/", empty_function)
        app.router.add_route(method, "/{function:.+}", submit)
    # No HEAD here: gearmand's HEAD submits a job, which a HEAD must never do.
    app.router.add_get("/{function:.+}", submit, allow_head=False)
    return app


class HttpService:
    """The HTTP listener of a GearmanServer: one of its optional services
    (``gearshift.server.service.Service``)."""

    def __init__(self) -> None:
        self.runner: web.AppRunner | None = None
        self.addresses: list[tuple[str, int]] = []

    def prepare(self, server: GearmanServer) -> None:
        """Nothing to do before the store opens."""

    async def start(self, server: GearmanServer) -> None:
        """Listen on the configured address and port; the bound addresses go to
        ``server.http_addresses``.

        Raises:
            OSError: the address cannot be bound.
            ConfigError: the port is out of range.
        """
        cfg = server.config
        if not 0 <= cfg.http_port <= 65535:
            raise ConfigError(f"invalid HTTP port {cfg.http_port}")
        # handler_cancellation: a client hanging up detaches it from its job.
        runner = web.AppRunner(
            build_app(server), access_log=None, shutdown_timeout=1.0, handler_cancellation=True
        )
        await runner.setup()
        host = cfg.http_listen if cfg.http_listen is not None else cfg.listen
        hosts: list[str | None] = list(host.split(",")) if host else [None]
        self.runner = runner
        self.addresses = []
        try:
            for name in hosts:
                site = web.TCPSite(
                    runner,
                    host=name,
                    port=cfg.http_port,
                    ssl_context=server.tls_context,
                    backlog=cfg.backlog,
                    reuse_address=True,
                )
                await site.start()
                listener = site._server
                if isinstance(listener, asyncio.Server):
                    for sock in listener.sockets:
                        addr = sock.getsockname()
                        self.addresses.append((str(addr[0]), int(addr[1])))
        except BaseException:
            await self.close()
            raise
        server.http_addresses = list(self.addresses)
        logger.info("HTTP on %s", ", ".join(f"{h}:{p}" for h, p in self.addresses))

    async def stop(self) -> None:
        """Stop listening and end open requests (event streams included): the server
        is shutting down."""
        await self.close()

    async def close(self) -> None:
        """Stop listening and end open requests, if not done yet."""
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()
