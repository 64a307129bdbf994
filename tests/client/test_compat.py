"""gearshift.compat.python_gearman: python-gearman 2.x code running on gearshift."""

from __future__ import annotations

import threading
from typing import Any

from gearshift.compat import python_gearman as pg
from tests.client.helpers import wait_until
from tests.procs import ServerProcess


def test_python_gearman_client_worker_admin(server: ServerProcess) -> None:
    worker = pg.GearmanWorker([server.address])
    attempts: dict[str, int] = {}

    def reverse(gearman_worker: pg.GearmanWorker, job: pg.GearmanJob) -> Any:
        gearman_worker.send_job_status(job, 1, 2)
        gearman_worker.send_job_data(job, b"half")
        gearman_worker.send_job_warning(job, b"warn")
        return job.data[::-1]

    def flaky(gearman_worker: pg.GearmanWorker, job: pg.GearmanJob) -> Any:
        attempts[job.data.decode()] = attempts.get(job.data.decode(), 0) + 1
        if attempts[job.data.decode()] < 3:
            gearman_worker.send_job_failure(job)
        return b"third time"

    def broken(gearman_worker: pg.GearmanWorker, job: pg.GearmanJob) -> Any:
        raise RuntimeError("nope")

    worker.register_task("reverse", reverse)
    worker.register_task("flaky", flaky)
    worker.register_task("broken", broken)
    worker.set_client_id("legacy")
    stop = threading.Event()
    worker.after_poll = lambda activity: not stop.is_set()  # type: ignore[method-assign]
    runner = threading.Thread(target=worker.work, kwargs={"poll_timeout": 0.2})
    runner.start()
    try:
        with pg.GearmanClient([server.address]) as client:
            request = client.submit_job("reverse", b"abc", poll_timeout=20)
            assert request.complete and request.state == pg.JOB_COMPLETE
            assert request.result == b"cba"
            assert list(request.data_updates) == [b"half"]
            assert list(request.warning_updates) == [b"warn"]
            assert request.status["numerator"] == 1 and request.job.handle

            requests = client.submit_multiple_jobs(
                [
                    {"task": "reverse", "data": b"12", "priority": pg.PRIORITY_HIGH},
                    {"task": "reverse", "data": b"34", "priority": pg.PRIORITY_LOW},
                ],
                poll_timeout=20,
            )
            assert [r.result for r in requests] == [b"21", b"43"]

            request = client.submit_job("flaky", b"a", max_retries=5, poll_timeout=20)
            assert request.state == pg.JOB_COMPLETE and request.result == b"third time"
            assert request.connection_attempts == 3
            request = client.submit_job("flaky", b"b", max_retries=0, poll_timeout=20)
            assert request.state == pg.JOB_FAILED and request.complete

            request = client.submit_job("broken", b"", poll_timeout=20)
            assert request.state == pg.JOB_FAILED
            assert request.exception == b"RuntimeError: nope"

            bg = client.submit_job("nobody", b"x", background=True)
            assert bg.state == pg.JOB_CREATED and bg.job.handle
            status = client.get_job_status(bg)
            assert status.status["known"] is True and status.status["running"] is False

            timed = client.submit_job("nobody", b"y", poll_timeout=0.2)
            assert timed.timed_out and not timed.complete

        with pg.GearmanAdminClient([server.address]) as admin:
            rows = {row["task"]: row for row in admin.get_status()}
            assert rows["reverse"]["workers"] == 1
            assert rows["nobody"]["queued"] >= 1
            assert any(w["client_id"] == "legacy" for w in admin.get_workers())
            assert admin.get_version()
            assert admin.send_maxqueue("nobody", 10) == "OK"
            assert admin.ping_server() >= 0
    finally:
        stop.set()
        runner.join(20)
        worker.shutdown()
    wait_until(lambda: not runner.is_alive())
