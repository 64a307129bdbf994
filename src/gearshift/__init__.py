"""gearshift: a Gearman job server, client, worker and admin toolkit.

The names below are loaded on first use (PEP 562), not when the package is imported.
Every ``import gearshift.X`` runs this file first, and the server, the store and the
protocol codec must not pay for the client, worker and admin libraries they never
use.  ``from gearshift import Client`` works as before: it imports the client at that
moment.  Type checkers read the ``TYPE_CHECKING`` block, which names the same objects.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gearshift._version import __version__

if TYPE_CHECKING:
    from gearshift._async.admin import AsyncAdminClient
    from gearshift._async.client import AsyncClient, JobRequest
    from gearshift._async.job import (
        AsyncJob,
        JobHandle,
        JobState,
        JobUpdate,
        WorkComplete,
        WorkData,
        WorkException,
        WorkFail,
        WorkStatus,
        WorkWarning,
    )
    from gearshift._async.multiadmin import AsyncMultiAdmin
    from gearshift._async.worker import AsyncWorker, WorkerJob
    from gearshift._sync.admin import AdminClient
    from gearshift._sync.client import Client, Job
    from gearshift._sync.multiadmin import MultiAdmin
    from gearshift._sync.worker import Worker
    from gearshift.addresses import ServerAddress, parse_servers
    from gearshift.errors import (
        ConnectionLost,
        GearmanError,
        JobException,
        JobFailed,
        JobTimeout,
        ServerError,
    )
    from gearshift.protocol.adminreplies import (
        ClusterMember,
        FunctionStatus,
        JobInfo,
        PriorityStatus,
        StoredJobInfo,
        StoreInfo,
        WorkerInfo,
    )
    from gearshift.protocol.client import JobStatus
    from gearshift.protocol.packets import Priority

#: Where each public name lives: the module imported the first time the name is used.
_WHERE: dict[str, str] = {
    "AdminClient": "gearshift._sync.admin",
    "AsyncAdminClient": "gearshift._async.admin",
    "AsyncClient": "gearshift._async.client",
    "AsyncJob": "gearshift._async.job",
    "AsyncMultiAdmin": "gearshift._async.multiadmin",
    "AsyncWorker": "gearshift._async.worker",
    "Client": "gearshift._sync.client",
    "ClusterMember": "gearshift.protocol.adminreplies",
    "ConnectionLost": "gearshift.errors",
    "FunctionStatus": "gearshift.protocol.adminreplies",
    "GearmanError": "gearshift.errors",
    "Job": "gearshift._sync.client",
    "JobException": "gearshift.errors",
    "JobFailed": "gearshift.errors",
    "JobHandle": "gearshift._async.job",
    "JobInfo": "gearshift.protocol.adminreplies",
    "JobRequest": "gearshift._async.client",
    "JobState": "gearshift._async.job",
    "JobStatus": "gearshift.protocol.client",
    "JobTimeout": "gearshift.errors",
    "JobUpdate": "gearshift._async.job",
    "MultiAdmin": "gearshift._sync.multiadmin",
    "Priority": "gearshift.protocol.packets",
    "PriorityStatus": "gearshift.protocol.adminreplies",
    "ServerAddress": "gearshift.addresses",
    "ServerError": "gearshift.errors",
    "StoreInfo": "gearshift.protocol.adminreplies",
    "StoredJobInfo": "gearshift.protocol.adminreplies",
    "WorkComplete": "gearshift._async.job",
    "WorkData": "gearshift._async.job",
    "WorkException": "gearshift._async.job",
    "WorkFail": "gearshift._async.job",
    "WorkStatus": "gearshift._async.job",
    "WorkWarning": "gearshift._async.job",
    "Worker": "gearshift._sync.worker",
    "WorkerInfo": "gearshift.protocol.adminreplies",
    "WorkerJob": "gearshift._async.worker",
    "parse_servers": "gearshift.addresses",
}

__all__ = [
    "AdminClient",
    "AsyncAdminClient",
    "AsyncClient",
    "AsyncJob",
    "AsyncMultiAdmin",
    "AsyncWorker",
    "Client",
    "ClusterMember",
    "ConnectionLost",
    "FunctionStatus",
    "GearmanError",
    "Job",
    "JobException",
    "JobFailed",
    "JobHandle",
    "JobInfo",
    "JobRequest",
    "JobState",
    "JobStatus",
    "JobTimeout",
    "JobUpdate",
    "MultiAdmin",
    "Priority",
    "PriorityStatus",
    "ServerAddress",
    "ServerError",
    "StoreInfo",
    "StoredJobInfo",
    "WorkComplete",
    "WorkData",
    "WorkException",
    "WorkFail",
    "WorkStatus",
    "WorkWarning",
    "Worker",
    "WorkerInfo",
    "WorkerJob",
    "__version__",
    "parse_servers",
]


def __getattr__(name: str) -> Any:
    """Import the module that holds ``name`` and keep the object here for the next use."""
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The loaded attributes and every public name, loaded or not (for completion)."""
    return sorted({*globals(), *__all__})
