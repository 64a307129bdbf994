"""python-gearman 2.x names and shapes over gearshift's blocking classes.

For code written against Yelp's python-gearman (Archivematica-style migrations)::

    from gearshift.compat.python_gearman import GearmanClient, GearmanWorker

    client = GearmanClient(["127.0.0.1:4730"])
    request = client.submit_job("reverse", "abc")
    request.result, request.state          # "cba", "COMPLETE"

    worker = GearmanWorker(["127.0.0.1:4730"])
    worker.register_task("reverse", lambda gearman_worker, job: job.data[::-1])
    worker.work()

Differences kept on purpose: payloads come back as ``bytes`` (python-gearman ran on
Python 2 ``str``); a handler exception reaches the client as WORK_EXCEPTION, recorded in
``request.exception``; ``max_retries`` resubmits only after WORK_FAIL or WORK_EXCEPTION,
never after a lost connection (a job the server acknowledged is not sent twice).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from gearshift._sync.admin import AdminClient
from gearshift._sync.client import Client, Job
from gearshift._sync.worker import Worker
from gearshift.errors import GearmanError, JobException, JobFailed, JobTimeout
from gearshift.protocol.packets import Priority

PRIORITY_NONE = None
PRIORITY_LOW = "LOW"
PRIORITY_HIGH = "HIGH"

JOB_UNKNOWN = "UNKNOWN"
JOB_PENDING = "PENDING"
JOB_CREATED = "CREATED"
JOB_FAILED = "FAILED"
JOB_COMPLETE = "COMPLETE"

_PRIORITIES = {
    PRIORITY_NONE: Priority.NORMAL,
    PRIORITY_LOW: Priority.LOW,
    PRIORITY_HIGH: Priority.HIGH,
}


class GearmanJob:
    """python-gearman's job: handle, task, unique, data."""

    def __init__(self, handle: str | None, task: str, unique: str | None, data: Any) -> None:
        self.handle = handle
        self.task = task
        self.unique = unique
        self.data = data

    def __repr__(self) -> str:
        return f"<GearmanJob task={self.task!r} handle={self.handle!r} unique={self.unique!r}>"


class GearmanJobRequest:
    """python-gearman's request object: the job plus what became of it."""

    def __init__(self, job: GearmanJob, priority: str | None, background: bool) -> None:
        self.gearman_job = job
        self.priority = priority
        self.background = background
        self.state = JOB_UNKNOWN
        self.result: Any = None
        self.exception: Any = None
        self.timed_out = False
        self.connection_attempts = 0
        self.data_updates: deque[Any] = deque()
        self.warning_updates: deque[Any] = deque()
        self.status: dict[str, Any] = {}
        self._running: Job[Any] | None = None

    @property
    def job(self) -> GearmanJob:
        """The GearmanJob (python-gearman's name)."""
        return self.gearman_job

    @property
    def complete(self) -> bool:
        """True once the job completed or failed."""
        return self.state in (JOB_COMPLETE, JOB_FAILED)

    def __repr__(self) -> str:
        return f"<GearmanJobRequest {self.job!r} state={self.state}>"


class GearmanClient:
    """python-gearman's client.

    Args:
        host_list: servers as ``"host:port"`` strings.
        random_unique_bytes: accepted for compatibility; background jobs get UUIDs.
    """

    def __init__(
        self, host_list: Iterable[str] | str | None = None, random_unique_bytes: int = 16
    ) -> None:
        self._client = Client(host_list)

    def shutdown(self) -> None:
        """Close the connections."""
        self._client.close()

    def __enter__(self) -> GearmanClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def submit_job(
        self,
        task: str,
        data: Any,
        unique: str | None = None,
        priority: str | None = PRIORITY_NONE,
        background: bool = False,
        wait_until_complete: bool = True,
        max_retries: int = 0,
        poll_timeout: float | None = None,
    ) -> GearmanJobRequest:
        """Submit one job; with ``wait_until_complete`` wait for it (up to ``poll_timeout``)."""
        [request] = self.submit_multiple_jobs(
            [
                {
                    "task": task,
                    "data": data,
                    "unique": unique,
                    "priority": priority,
                }
            ],
            background=background,
            wait_until_complete=wait_until_complete,
            max_retries=max_retries,
            poll_timeout=poll_timeout,
        )
        return request

    def submit_multiple_jobs(
        self,
        jobs_to_submit: Iterable[dict[str, Any]],
        background: bool = False,
        wait_until_complete: bool = True,
        max_retries: int = 0,
        poll_timeout: float | None = None,
    ) -> list[GearmanJobRequest]:
        """Submit several jobs (dicts with task, data, unique, priority)."""
        requests = []
        for spec in jobs_to_submit:
            job = GearmanJob(None, spec["task"], spec.get("unique"), spec.get("data", b""))
            request = GearmanJobRequest(job, spec.get("priority"), background)
            self._send(request)
            requests.append(request)
        if wait_until_complete and not background:
            self.wait_until_jobs_completed(requests, poll_timeout, max_retries=max_retries)
        return requests

    def _send(self, request: GearmanJobRequest) -> Job[Any] | None:
        job = request.job
        priority = _PRIORITIES.get(request.priority, Priority.NORMAL)
        request.connection_attempts += 1
        if request.background:
            handle = self._client.submit_background(
                job.task, job.data, unique=job.unique, priority=priority
            )
            job.handle = str(handle)
            request.state = JOB_CREATED
            request.status = {"handle": job.handle}
            return None
        running = self._client.submit_job(
            job.task,
            job.data,
            unique=job.unique,
            priority=priority,
            on_data=request.data_updates.append,
            on_warning=request.warning_updates.append,
            on_status=lambda n, d: request.status.update(numerator=n, denominator=d),
        )
        job.handle = str(running.handle)
        request.state = JOB_CREATED
        request._running = running
        return running

    def wait_until_jobs_completed(
        self,
        job_requests: Iterable[GearmanJobRequest],
        poll_timeout: float | None = None,
        max_retries: int = 0,
    ) -> list[GearmanJobRequest]:
        """Wait for foreground requests; mark those still running as ``timed_out``."""
        requests = list(job_requests)
        for request in requests:
            self._wait(request, poll_timeout, max_retries)
        return requests

    def _wait(self, request: GearmanJobRequest, poll_timeout: float | None, retries: int) -> None:
        while True:
            running = request._running
            if running is None:
                return
            try:
                request.result = running.result(poll_timeout)
                request.state = JOB_COMPLETE
                return
            except JobTimeout:
                request.timed_out = True
                return
            except (JobFailed, JobException) as exc:
                request.state = JOB_FAILED
                if isinstance(exc, JobException):
                    request.exception = exc.payload
                if retries <= 0:
                    return
                retries -= 1
                self._send(request)

    def get_job_status(
        self, current_request: GearmanJobRequest, poll_timeout: float | None = None
    ) -> GearmanJobRequest:
        """GET_STATUS for a request; fills ``request.status`` like python-gearman."""
        status = self._client.get_status(current_request.job.handle or "")
        current_request.status.update(
            handle=current_request.job.handle,
            known=status.known,
            running=status.running,
            numerator=status.numerator,
            denominator=status.denominator,
            time_received=None,
        )
        return current_request


class GearmanWorker:
    """python-gearman's worker: ``register_task(task, callback(worker, job))`` then ``work()``.

    Jobs run one at a time, as in python-gearman.
    """

    def __init__(self, host_list: Iterable[str] | str | None = None) -> None:
        self._worker = Worker(host_list)
        self._jobs: dict[str, Any] = {}

    def shutdown(self) -> None:
        """Close the connections."""
        self._worker.close()

    def __enter__(self) -> GearmanWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def set_client_id(self, client_id: str) -> None:
        """SET_CLIENT_ID."""
        self._worker.set_client_id(client_id)

    def register_task(
        self, task: str, callback_function: Callable[[GearmanWorker, GearmanJob], Any]
    ) -> None:
        """Register ``callback_function(gearman_worker, gearman_job)`` for ``task``."""

        def handler(job: Any) -> Any:
            legacy = GearmanJob(job.handle, job.function, job.unique, job.data)
            self._jobs[job.handle] = job
            try:
                return callback_function(self, legacy)
            finally:
                self._jobs.pop(job.handle, None)

        self._worker.register(task, handler)

    def unregister_task(self, task: str) -> None:
        """CANT_DO."""
        self._worker.unregister(task)

    def send_job_data(
        self, current_job: GearmanJob, data: Any, poll_timeout: float | None = None
    ) -> None:
        """WORK_DATA for a running job."""
        self._live(current_job).send_data(data)

    def send_job_warning(
        self, current_job: GearmanJob, data: Any, poll_timeout: float | None = None
    ) -> None:
        """WORK_WARNING for a running job."""
        self._live(current_job).send_warning(data)

    def send_job_status(
        self,
        current_job: GearmanJob,
        numerator: int,
        denominator: int,
        poll_timeout: float | None = None,
    ) -> None:
        """WORK_STATUS for a running job."""
        self._live(current_job).send_status(numerator, denominator)

    def send_job_failure(self, current_job: GearmanJob) -> None:
        """WORK_FAIL for a running job (its return value is then ignored)."""
        self._live(current_job).fail()

    def _live(self, job: GearmanJob) -> Any:
        try:
            return self._jobs[job.handle or ""]
        except KeyError:
            raise GearmanError(f"job {job.handle} is not running here") from None

    def after_poll(self, any_activity: bool) -> bool:
        """Called after every poll; return False to leave ``work()`` (override it)."""
        return True

    def work(self, poll_timeout: float = 60.0) -> None:
        """Run jobs one at a time until ``after_poll`` returns False."""
        while True:
            activity = self._worker.work_once(timeout=poll_timeout)
            if not self.after_poll(activity):
                return


class GearmanAdminClient:
    """python-gearman's admin client, returning its dict shapes (first server only)."""

    def __init__(
        self, host_list: Iterable[str] | str | None = None, poll_timeout: float = 10.0
    ) -> None:
        servers = [host_list] if isinstance(host_list, str) else list(host_list or [])
        self._admin = AdminClient(servers[0] if servers else None, timeout=poll_timeout)

    def shutdown(self) -> None:
        """Close the connection."""
        self._admin.close()

    def __enter__(self) -> GearmanAdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def get_status(self) -> list[dict[str, Any]]:
        """``status`` as dicts; ``queued`` is gearmand's TOTAL column, as python-gearman had it."""
        return [
            {"task": r.name, "queued": r.total, "running": r.running, "workers": r.workers}
            for r in self._admin.status()
        ]

    def get_workers(self) -> list[dict[str, Any]]:
        """``workers`` as dicts."""
        return [
            {
                "file_descriptor": str(w.fd),
                "ip": w.address,
                "client_id": w.client_id or "-",
                "tasks": w.functions,
            }
            for w in self._admin.workers()
        ]

    def get_version(self) -> str:
        """``version``."""
        return self._admin.version()

    def send_maxqueue(self, task: str, max_size: int) -> str:
        """``maxqueue``."""
        self._admin.maxqueue(task, max_size)
        return "OK"

    def send_shutdown(self, graceful: bool = True) -> str:
        """``shutdown``."""
        self._admin.shutdown(graceful)
        return "OK"

    def ping_server(self) -> float:
        """Round-trip time of a ``version`` command, in seconds."""
        started = time.perf_counter()
        self._admin.version()
        return time.perf_counter() - started
