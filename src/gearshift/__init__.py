"""gearshift: a Gearman job server, client, worker and admin toolkit."""

from gearshift._async.admin import AsyncAdminClient
from gearshift._async.client import (
    AsyncClient,
    AsyncJob,
    JobHandle,
    JobRequest,
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
from gearshift._version import __version__
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
