"""Real server processes for tests: the C++ gearmand and gearshift, each on a free port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

GEARMAND = "/usr/sbin/gearmand"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} during start-up")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server not listening on {port} after {timeout}s")


class ServerProcess:
    """A Gearman server in a child process: ``start()``, ``kill()``, ``restart()``."""

    kind = "server"

    def __init__(self, extra_args: Sequence[str] = (), port: int | None = None) -> None:
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.kind}-"))
        self.log = self.dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        raise NotImplementedError  # subclasses say how to start themselves

    def start(self) -> ServerProcess:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        try:
            wait_listening(self.port, self.proc)
        except RuntimeError as exc:
            # Say why: the server's own last words are in its log.
            raise RuntimeError(
                f"{self.kind}: {exc}; log tail:\n{self.log_text()[-2000:]}"
            ) from None
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: no chance to flush anything."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def restart(self) -> ServerProcess:
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Gearmand(ServerProcess):
    """Debian's C++ gearmand 1.1.20."""

    kind = "gearmand"

    def argv(self) -> list[str]:
        return [
            GEARMAND,
            "-p",
            str(self.port),
            "-L",
            "127.0.0.1",
            "--threads=0",
            "-l",
            str(self.dir / "gearmand.log"),
            "-P",
            str(self.dir / "gearmand.pid"),
            *self.extra_args,
        ]


class Gearshift(ServerProcess):
    """gearshift's own server, started through its command line."""

    kind = "gearshift"

    def argv(self) -> list[str]:
        args = self.extra_args
        if "-q" not in args and not any(a.startswith("--queue") for a in args):
            args = ["-q", "builtin", *args]
        return [
            sys.executable,
            "-m",
            "gearshift",
            "server",
            "-p",
            str(self.port),
            "-L",
            "127.0.0.1",
            "-l",
            "stderr",
            *args,
        ]


def have_gearmand() -> bool:
    return os.access(GEARMAND, os.X_OK)
