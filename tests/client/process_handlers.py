"""Handlers for tests of ``executor="process"``.

They live at module level in an importable module because a spawned child process
imports them by name.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from gearshift import WorkerJob
from gearshift.errors import JobFailed


class TwoArgError(Exception):
    """Pickles, but cannot be unpickled (``__init__`` needs two arguments)."""

    def __init__(self, left: str, right: str) -> None:
        super().__init__(f"{left}/{right}")


def cpu_pid(job: WorkerJob[bytes]) -> bytes:
    """CPU-bound: sum of squares below ``int(data)``; returns ``b"<pid> <sum>"``."""
    total = sum(i * i for i in range(int(job.data)))
    return f"{os.getpid()} {total}".encode()


def progress(job: WorkerJob[bytes]) -> bytes:
    job.send_status(1, 3)
    job.send_data(b"first")
    job.send_warning(b"careful")
    job.send_status(2, 3)
    job.send_data(b"second:" + job.data)
    return b"done:" + job.data


def raise_value_error(job: WorkerJob[bytes]) -> bytes:
    raise ValueError(f"bad input {job.data!r}")


def raise_two_arg_error(job: WorkerJob[bytes]) -> bytes:
    raise TwoArgError("left", "right")


def raise_job_failed(job: WorkerJob[bytes]) -> bytes:
    raise JobFailed(job.handle)


def call_fail(job: WorkerJob[bytes]) -> bytes:
    job.fail()
    return b"ignored"


def spin_forever(job: WorkerJob[bytes]) -> bytes:
    """Report the pid, then burn CPU until killed."""
    job.send_data(str(os.getpid()).encode())
    while True:
        pass


def sleep_pid(job: WorkerJob[bytes]) -> bytes:
    """Report the pid, sleep ``float(data)`` seconds, return the pid."""
    pid = str(os.getpid()).encode()
    job.send_data(pid)
    time.sleep(float(job.data))
    return pid


def exit_hard(job: WorkerJob[bytes]) -> bytes:
    """Die without a word: ``os._exit`` or a segfault-like SIGSEGV."""
    job.send_data(str(os.getpid()).encode())
    if job.data == b"segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    os._exit(3)


def timed(job: WorkerJob[Any]) -> dict[str, Any]:
    """Sleep ``data["sleep"]`` seconds; report pid and wall-clock start and end."""
    started = time.time()
    time.sleep(job.data["sleep"])
    return {"pid": os.getpid(), "start": started, "end": time.time(), "data": job.data}
