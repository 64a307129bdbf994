"""Records shared by the server, the stores and the cluster: dependency-free.

``StoredJob`` is a background job as a durable queue keeps it; ``ClusterSettings``
names a cluster of servers sharing one store.  Neither module that uses them (the
scheduler, which must not import a store, and the stores, which must not import the
server) owns them, so they live here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gearshift.protocol.packets import Priority

__all__ = ["ClusterSettings", "StoredJob"]


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
    #: Set by a clustered store's ``add`` when another server of the cluster already
    #: holds a job with this (function, unique): it is acknowledged but not queued here.
    coalesced: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """Several servers sharing one store as a cluster (PostgreSQL only).

    Attributes:
        name: the cluster's name; servers with the same store and name form one cluster.
        node: this server's name in the cluster, stable across restarts (the server
            fills in ``host:port`` when empty).
        lease: seconds a member stays alive without renewing its lease; after that the
            others take over its background jobs.
        heartbeat: seconds between lease renewals (and takeover polls).
    """

    name: str
    node: str = ""
    lease: float = 10.0
    heartbeat: float = 2.0
