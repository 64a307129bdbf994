"""gearshift: a Gearman job server, client, worker and admin toolkit."""

from gearshift.errors import (
    ConnectionLost,
    GearmanError,
    JobException,
    JobFailed,
    JobTimeout,
    ServerError,
)
from gearshift.protocol.packets import Priority

__version__ = "0.1.0"

__all__ = [
    "ConnectionLost",
    "GearmanError",
    "JobException",
    "JobFailed",
    "JobTimeout",
    "Priority",
    "ServerError",
    "__version__",
]
