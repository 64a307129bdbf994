"""gearmand's HTTP job submission, run straight against the scheduler.

``POST /reverse`` with body ``hello`` submits a foreground job to ``reverse`` and
answers, once a worker finishes it::

    HTTP/1.1 200 OK
    X-Gearman-Job-Handle: H:host:1
    X-Gearman-Command: WORK_COMPLETE
    Content-Length: 5

    olleh

Headers read (names case-insensitive, as in gearmand): ``X-Gearman-Unique`` (default
``-``: coalesce by payload, gearmand's default), ``X-Gearman-Background: true`` (answer
``JOB_CREATED`` at once), ``X-Gearman-Priority: high|low``.  ``GET`` submits an empty
payload, ``PUT`` works like ``POST``.

Each request is a ``Peer`` of its own (it appears in the ``workers`` list, as gearmand's
HTTP connections do).  The scheduler appends encoded response packets to the peer's
``out``; ``HttpPeer.flush`` decodes them and settles the request.

Fixed gearmand 1.1.20 bugs: HTTP/1.1 is answered as 1.1 (keep-alive works), WORK_FAIL
carries the whole handle, WORK_DATA chunks are delivered (before the final payload)
instead of corrupting the reply, WORK_EXCEPTION reports its payload, HEAD does not
submit a job, and refusals (queue full, access rules, unique too long) are HTTP errors
rather than a silently dropped connection.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final

from aiohttp import web

from gearshift.protocol.codec import Decoder, Packet
from gearshift.protocol.packets import SUBMIT_TYPES, PacketType, Priority
from gearshift.server.durable import store_job
from gearshift.server.model import Job, Peer
from gearshift.tls import peer_identity

if TYPE_CHECKING:
    from gearshift.server.server import GearmanServer

__all__ = ["HttpPeer", "submit"]

logger = logging.getLogger(__name__)

_T = PacketType
_PRIORITIES: Final = {"high": Priority.HIGH, "low": Priority.LOW, "normal": Priority.NORMAL}
#: ERROR codes -> HTTP status of the refusal.
_ERROR_STATUS: Final = {
    b"QUEUE_ERROR": 503,
    b"SHUTDOWN_GRACEFUL": 503,
    b"PERMISSION_DENIED": 403,
    b"ARGUMENT_TOO_LARGE": 400,
}
_FINAL: Final = frozenset({_T.WORK_COMPLETE, _T.WORK_FAIL, _T.WORK_EXCEPTION})


class HttpPeer(Peer):
    """One HTTP submission, as the scheduler sees it."""

    __slots__ = ("decoder", "created", "result", "handle", "chunks")

    def __init__(self, host: str, fd: int, identity: str | None, max_packet: int) -> None:
        super().__init__(host, fd, exceptions=True)
        self.client_id = b"http"
        self.identity = identity
        self.decoder = Decoder(max_packet)
        loop = asyncio.get_running_loop()
        #: Settled by JOB_CREATED (or a refusal) ...
        self.created: asyncio.Future[Packet] = loop.create_future()
        #: ... and by the final WORK_* of a foreground job (or a refusal).
        self.result: asyncio.Future[Packet] = loop.create_future()
        self.handle = b""
        self.chunks: list[bytes] = []

    def flush(self) -> None:
        out = self.out
        if not out:
            return
        data = b"".join(out)
        out.clear()
        for event in self.decoder.feed(data):
            if type(event) is not Packet:
                continue
            self._packet(event)

    def _packet(self, packet: Packet) -> None:
        ptype = packet.type
        if ptype == _T.JOB_CREATED:
            self.handle = packet.args[0]
            if not self.created.done():
                self.created.set_result(packet)
        elif ptype == _T.ERROR:
            for fut in (self.created, self.result):
                if not fut.done():
                    fut.set_result(packet)
        elif ptype == _T.WORK_DATA:
            self.chunks.append(packet.args[1])
        elif ptype in _FINAL and not self.result.done():
            self.result.set_result(packet)


def _peer_info(request: web.Request) -> tuple[str, int, str | None]:
    transport = request.transport
    host = request.remote or "-"
    fd = -1
    identity = None
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            fd = sock.fileno()
        identity = peer_identity(transport.get_extra_info("peercert"))
    return host, fd, identity


def _reply(
    status: int, handle: bytes, command: str | None, body: bytes, server: GearmanServer
) -> web.Response:
    headers = {"Server": f"gearshift/{server.version}"}
    if handle:
        headers["X-Gearman-Job-Handle"] = handle.decode("latin-1")
    if command is not None:
        headers["X-Gearman-Command"] = command
    return web.Response(status=status, body=body, headers=headers)


def _refusal(packet: Packet, handle: bytes, server: GearmanServer) -> web.Response:
    code = packet.args[0]
    text = packet.args[1] if len(packet.args) > 1 else b""
    status = _ERROR_STATUS.get(code, 500)
    return _reply(status, handle, "ERROR", code + b" " + text + b"\n", server)


async def submit(request: web.Request, server: GearmanServer) -> web.StreamResponse:
    """Handle ``GET|POST|PUT /{function}`` the way gearmand's HTTP plugin does."""
    # As gearmand: the function is the request target after the first "/", byte for
    # byte (no percent-decoding, a query string included), so a worker registered under
    # the literal name gets the job.
    function = request.raw_path[1:].encode("utf-8", "surrogateescape")
    if not function:
        return web.Response(status=404, text="no function given\n")
    headers = request.headers
    unique = headers.get("X-Gearman-Unique", "-").encode("utf-8", "surrogateescape")
    background = headers.get("X-Gearman-Background", "").strip().lower() == "true"
    priority = _PRIORITIES.get(
        headers.get("X-Gearman-Priority", "").strip().lower(), Priority.NORMAL
    )
    # The request as the submit packet that asks for the same (``packets.SUBMITS``).
    ptype = SUBMIT_TYPES[(priority, background)]
    data = await request.read() if request.method in ("POST", "PUT") else b""
    host, fd, identity = _peer_info(request)
    sched = server.scheduler
    peer = HttpPeer(host, fd, identity, server.config.max_packet_size)
    sched.connect(peer)
    try:
        args = (function, unique, data)
        if background and server.persistent:
            job = sched.submit_request(peer, ptype, args, defer=True)
            sched.flush()
            if job is not None:
                # Shielded: a client hanging up must not leave the job half-stored.
                task = asyncio.get_running_loop().create_task(_persist(server, peer, job))
                server.track(task)
                await asyncio.shield(task)
        else:
            sched.submit_request(peer, ptype, args)
            sched.flush()
        first = await peer.created
        if first.type == _T.ERROR:
            return _refusal(first, peer.handle, server)
        if background:
            return _reply(200, peer.handle, "JOB_CREATED", b"", server)
        final = await peer.result
        if final.type == _T.ERROR:
            return _refusal(final, peer.handle, server)
        if final.type == _T.WORK_COMPLETE:
            body = b"".join(peer.chunks) + final.args[1]
            return _reply(200, peer.handle, "WORK_COMPLETE", body, server)
        if final.type == _T.WORK_EXCEPTION:
            return _reply(200, peer.handle, "WORK_EXCEPTION", final.args[1], server)
        return _reply(200, peer.handle, "WORK_FAIL", b"", server)
    finally:
        # A client that hung up leaves its job, which is then ignored (gearmand's way).
        sched.disconnect(peer)
        sched.flush()


async def _persist(server: GearmanServer, peer: HttpPeer, job: Job) -> None:
    """Make a deferred background job durable, as the binary protocol does."""
    sched = server.scheduler
    stored = sched.stored_record(job)
    error = await store_job(server, job, stored)
    if error is None:
        sched.activate(job, peer, stored)
    else:
        sched.abort(job, peer, error)
    sched.flush()
