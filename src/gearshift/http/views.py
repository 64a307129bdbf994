"""JSON views of the server's state, shared by ``/api/*`` and the dashboard's event stream.

Everything is read from the scheduler at request time on the event loop thread, so a
view is a consistent snapshot.  Bytes (function names, handles, uniques) are decoded
as UTF-8 with replacement: they are labels for people, not data.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from gearshift.server.model import Job, Peer

if TYPE_CHECKING:
    from gearshift.server.server import GearmanServer

__all__ = ["function_rows", "job_row", "jobs", "snapshot", "status", "workers"]

_PRIORITY = ("high", "normal", "low")


def _s(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def function_rows(server: GearmanServer) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for f in server.scheduler.functions.values():
        queued = [f.queued(p) for p in range(3)]
        rows.append(
            {
                "name": _s(f.name),
                "total": f.total,
                "queued": f.total - f.running,
                "running": f.running,
                "workers": f.workers,
                "high": queued[0],
                "normal": queued[1],
                "low": queued[2],
                "maxqueue": list(f.maxqueue),
            }
        )
    rows.sort(key=lambda r: r["name"])
    return rows


def _counters(server: GearmanServer) -> dict[str, Any]:
    stats = server.scheduler.stats
    finished: dict[str, int] = {"complete": 0, "fail": 0, "exception": 0}
    for (_, result), n in stats.finished.items():
        finished[result] = finished.get(result, 0) + n
    latency: dict[str, Any] = {}
    events = server.job_events
    if events is not None:
        for name, table in (("wait", events.wait), ("run", events.run)):
            latency[name] = {
                "sum": sum(h.sum for h in table.values()),
                "count": sum(h.count for h in table.values()),
            }
    return {
        "submitted": sum(stats.submitted.values()),
        "finished": finished,
        "packets": sum(stats.packets),
        "latency": latency,
    }


def status(server: GearmanServer) -> dict[str, Any]:
    """``/api/status``: the server, its functions and its counters."""
    sched = server.scheduler
    return {
        "server": {
            "version": server.version,
            "time": time.time(),
            "uptime": time.monotonic() - server.started_at,
            "addresses": [f"{h}:{p}" for h, p in server.addresses],
            "connections": len(sched.peers),
            "jobs": sched.job_count(),
            "persistent": server.persistent,
        },
        "functions": function_rows(server),
        "counters": _counters(server),
    }


def _peer_row(peer: Peer) -> dict[str, Any]:
    return {
        "fd": peer.fd,
        "host": peer.host,
        "client_id": _s(peer.client_id),
        "identity": peer.identity,
        "functions": [_s(f.name) for f in reversed(peer.abilities)],
        "jobs": sorted(_s(j.handle) for j in peer.jobs),
        "sleeping": peer.sleeping,
    }


def workers(server: GearmanServer, *, all_peers: bool = False) -> list[dict[str, Any]]:
    """``/api/workers``: connections that registered a function (or every one)."""
    return [_peer_row(p) for p in server.scheduler.peers if all_peers or p.abilities]


def _state(job: Job, now: float) -> str:
    if job.pending:
        return "pending"
    if job.ignore:
        return "ignored"
    if job.worker is not None:
        return "running"
    if job.when and job.when > now:
        return "scheduled"
    return "queued"


def job_row(job: Job, now: float) -> dict[str, Any]:
    worker = job.worker
    return {
        "handle": _s(job.handle),
        "function": _s(job.func.name),
        "unique": _s(job.unique),
        "state": _state(job, now),
        "priority": _PRIORITY[job.priority],
        "background": job.background,
        "retries": job.retries,
        "status": [int(job.numerator), int(job.denominator)],
        "worker": None if worker is None else {"fd": worker.fd, "host": worker.host},
        "clients": len(job.clients),
        "when": job.when or None,
        "created": job.created or None,
        "started": job.started or None,
        "size": len(job.data),
    }


def jobs(server: GearmanServer, *, function: str | None = None, limit: int = 1000) -> list[Any]:
    """``/api/jobs``: up to ``limit`` jobs, oldest handle first."""
    now = time.time()
    rows = []
    wanted = None if function is None else function.encode("utf-8", "surrogateescape")
    for job in server.scheduler.handles.values():
        if wanted is not None and job.func.name != wanted:
            continue
        rows.append(job_row(job, now))
        if len(rows) >= limit:
            break
    return rows


def snapshot(
    server: GearmanServer, job_limit: int = 100, worker_limit: int = 200
) -> dict[str, Any]:
    """One dashboard frame: status, the first workers and the first jobs.

    Both lists are capped so that a frame stays small with thousands of workers or a
    million queued jobs; ``workers_total`` and ``server.jobs`` give the real counts.
    """
    out = status(server)
    registered = [p for p in server.scheduler.peers if p.abilities]
    out["workers"] = [_peer_row(p) for p in registered[:worker_limit]]
    out["workers_total"] = len(registered)
    out["jobs"] = jobs(server, limit=job_limit)
    return out
