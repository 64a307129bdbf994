"""gearshift: a Gearman job server, client, worker and admin toolkit."""

from gearshift._async.admin import AsyncAdminClient
from gearshift._sync.admin import AdminClient
from gearshift.errors import (
    ConnectionLost,
    GearmanError,
    JobException,
    JobFailed,
    JobTimeout,
    ServerError,
)
from gearshift.protocol.adminreplies import FunctionStatus, JobInfo, PriorityStatus, WorkerInfo
from gearshift.protocol.packets import Priority

__version__ = "0.1.0"

__all__ = [
    "AdminClient",
    "AsyncAdminClient",
    "ConnectionLost",
    "FunctionStatus",
    "GearmanError",
    "JobException",
    "JobFailed",
    "JobInfo",
    "JobTimeout",
    "Priority",
    "PriorityStatus",
    "ServerError",
    "WorkerInfo",
    "__version__",
]
