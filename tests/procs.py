"""Real server processes for tests: the C++ gearmand and gearshift, each on a free port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

GEARMAND = "/usr/sbin/gearmand"


#: Ports this test process has handed out: never handed out twice, so servers started
#: at the same time (the differential suite runs several) cannot be given one port.
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port() -> int:
    with _handed_out_lock:
        while True:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port


def _listening_inodes(port: int) -> set[str] | None:
    """Socket inodes listening on ``port`` (Linux /proc), or None where /proc cannot say."""
    inodes: set[str] = set()
    found_table = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        found_table = True
        for row in rows:
            fields = row.split()
            # local address "HEX_IP:HEX_PORT", state 0A = LISTEN, inode in column 10
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes if found_table else None


def _listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` itself holds the socket listening on ``port``."""
    inodes = _listening_inodes(port)
    if inodes is None:
        return True  # no /proc: trust the connect
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


def _port_taken(port: int) -> bool:
    """Whether some other socket holds ``port`` (a bind as the servers do it fails)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


class PortConflict(RuntimeError):
    """Another process listens on the port the server was given."""


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Wait until ``proc`` accepts connections on ``port``.

    A connect alone is not proof: if another process took the port first, the connect
    reaches that one while ours fails to bind (gearshift exits, gearmand keeps retrying).
    So the listening socket must be ``proc``'s own; PortConflict when, for two seconds,
    it is someone else's.
    """
    deadline = time.monotonic() + timeout
    foreign_since: float | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            if _port_taken(port):
                raise PortConflict(f"port {port} is taken by another process")
            raise RuntimeError(f"server exited with {proc.returncode} during start-up")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pass
        except OSError:
            time.sleep(0.05)
            continue
        if _listens_on(proc.pid, port):
            return
        now = time.monotonic()
        if foreign_since is None:
            foreign_since = now
        elif now - foreign_since > 2.0:
            raise PortConflict(f"port {port} is taken by another process")
        time.sleep(0.05)
    raise RuntimeError(f"server not listening on {port} after {timeout}s")


class ServerProcess:
    """A Gearman server in a child process: ``start()``, ``kill()``, ``restart()``."""

    kind = "server"

    def __init__(self, extra_args: Sequence[str] = (), port: int | None = None) -> None:
        #: A port we chose may be moved once if another process holds it at the first start.
        self._may_move = port is None
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
        for attempt in range(3):
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    self.argv(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
            try:
                wait_listening(self.port, self.proc)
                break
            except RuntimeError as exc:
                if isinstance(exc, PortConflict) and self._may_move and attempt < 2:
                    self.kill()
                    self.port = free_port()  # another process had it: take another
                    continue
                # Say why: the server's own last words are in its log.
                raise RuntimeError(
                    f"{self.kind}: {exc}; log tail:\n{self.log_text()[-2000:]}"
                ) from None
        self._may_move = False  # clients know the port now; restarts keep it
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
