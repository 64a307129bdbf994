"""Process and machine figures read from Linux ``/proc``, and a server started for a run.

The server under test is measured from outside: its CPU seconds (``utime + stime``
of ``/proc/PID/stat``, all threads) around the measured window, its peak resident
memory (``VmHWM``) and its current one (``VmRSS``).  That is why a server started
with ``--server-cmd`` must stay in the foreground and be the process that was
started (exec, not fork), exactly as ``shared/bench/compare.sh`` requires.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of one process (all its threads); 0.0 if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name may contain spaces and parentheses; fields start after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def status_kib(pid: int, key: str) -> int:
    """One ``kB`` field of ``/proc/PID/status`` (``VmHWM``, ``VmRSS``); 0 if unavailable."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    prefix = key + ":"
    for line in text.splitlines():
        if line.startswith(prefix):
            return int(line.split()[1])
    return 0


def machine_busy() -> tuple[int, int]:
    """(busy jiffies, total jiffies) of the whole machine, from the ``cpu`` line of /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu "):
                values = [int(v) for v in line.split()[1:]]
                total = sum(values)
                # idle and iowait are the 4th and 5th values.
                return total - values[3] - values[4], total
    return 0, 0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_listening(
    host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None
) -> None:
    """Return once ``host:port`` accepts connections.

    Raises:
        RuntimeError: the process exited, or nothing listened within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} during start-up")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listening on {host}:{port} after {timeout}s") from None
            time.sleep(0.02)


@dataclass
class ServerSnapshot:
    """CPU and memory of the server process at one moment."""

    cpu_s: float
    rss_kib: int
    hwm_kib: int


class ManagedServer:
    """A server process the bench starts itself, so it can read its CPU and memory.

    ``command`` is split like a shell would (no shell is run); ``{port}`` is replaced
    by ``port`` and ``{rundir}`` by a scratch directory that is removed on ``stop()``.

    Args:
        command: e.g. ``"/usr/sbin/gearmand -p {port} -L 127.0.0.1 --threads=0 -l none"``.
        port: the port to substitute (a free one when None).
        host: where to wait for the listener.
        log_path: where the server's stdout/stderr go (the scratch directory by default).
        start_timeout: seconds to wait for the listener.
    """

    def __init__(
        self,
        command: str,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.rundir = Path(tempfile.mkdtemp(prefix="gearshift-bench-"))
        self.argv = [
            word.replace("{port}", str(self.port)).replace("{rundir}", str(self.rundir))
            for word in shlex.split(command)
        ]
        self.log_path = log_path or self.rundir / "server.log"
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server's process id (it must have been started)."""
        if self.proc is None:
            raise RuntimeError("server not started")
        return self.proc.pid

    def start(self) -> ManagedServer:
        """Start the process and wait until it listens."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_listening(self.host, self.port, self.start_timeout, self.proc)
        except RuntimeError as exc:
            tail = self.log_tail()
            self.stop()
            raise RuntimeError(f"{exc}: {' '.join(self.argv)}\n{tail}") from None
        return self

    def snapshot(self) -> ServerSnapshot:
        """CPU seconds so far, current and peak RSS."""
        pid = self.pid
        return ServerSnapshot(cpu_seconds(pid), status_kib(pid, "VmRSS"), status_kib(pid, "VmHWM"))

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the server wrote."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; removes the scratch directory."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.rundir, ignore_errors=True)

    def __enter__(self) -> ManagedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
