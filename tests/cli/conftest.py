"""Fixtures for the CLI tests: run gearshift's commands and libgearman's next to them."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from tests.procs import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
GEARMAN = shutil.which("gearman")
GEARADMIN = shutil.which("gearadmin")

needs_gearman = pytest.mark.skipif(GEARMAN is None, reason="libgearman's gearman not installed")
needs_gearadmin = pytest.mark.skipif(GEARADMIN is None, reason="gearadmin not installed")


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("GEARMAN_SERVERS", None)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    if extra:
        env.update(extra)
    return env


def gearshift_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "gearshift", *args]


def run(
    argv: Sequence[str],
    *,
    input: bytes = b"",
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command to completion, capturing stdout and stderr as bytes."""
    return subprocess.run(
        list(argv), input=input, capture_output=True, timeout=timeout, env=_env(env)
    )


Result = subprocess.CompletedProcess[bytes]
#: What a scripted worker sends for one job: (packet type, arguments after the handle).
Reply = tuple[int, tuple[bytes, ...]]
Script = Callable[[bytes], list[Reply]]


def gs(
    *args: str, input: bytes = b"", timeout: float = 60.0, env: dict[str, str] | None = None
) -> Result:
    """``python -m gearshift ARGS``."""
    return run(gearshift_argv(*args), input=input, timeout=timeout, env=env)


def gearman(*args: str, input: bytes = b"", timeout: float = 60.0) -> Result:
    assert GEARMAN is not None
    return run([GEARMAN, *args], input=input, timeout=timeout)


def gearadmin(*args: str, timeout: float = 60.0) -> Result:
    assert GEARADMIN is not None
    return run([GEARADMIN, *args], timeout=timeout)


def wait_for(cond: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``cond`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def admin_lines(port: int, command: str, timeout: float = 10.0) -> list[str]:
    """Raw admin command over a plain socket, independent of the code under test."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(command.encode() + b"\r\n")
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            lines = buf.decode().splitlines()
            if lines and (lines[-1] == "." or lines[0].startswith(("OK", "ERR"))):
                if buf.endswith(b"\n"):
                    break
    return buf.decode().splitlines()


def status_of(port: int) -> dict[str, tuple[int, int, int]]:
    """``status`` as {function: (total, running, workers)}."""
    out: dict[str, tuple[int, int, int]] = {}
    for line in admin_lines(port, "status"):
        parts = line.split("\t")
        if len(parts) == 4:
            out[parts[0]] = (int(parts[1]), int(parts[2]), int(parts[3]))
    return out


def wait_workers(port: int, function: str, count: int = 1, timeout: float = 30.0) -> None:
    """Wait until ``function`` has at least ``count`` registered workers."""
    wait_for(
        lambda: status_of(port).get(function, (0, 0, 0))[2] >= count,
        timeout,
        f"{count} worker(s) for {function}",
    )


def wait_queued(port: int, function: str, total: int, timeout: float = 30.0) -> None:
    wait_for(
        lambda: status_of(port).get(function, (0, 0, 0))[0] == total,
        timeout,
        f"{total} job(s) for {function}",
    )


class Procs:
    """Background processes a test starts; all are stopped at teardown."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        argv: Sequence[str],
        *,
        stdin: int | None = subprocess.DEVNULL,
        stdout: int | None = subprocess.PIPE,
        stderr: int | None = subprocess.PIPE,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            list(argv), stdin=stdin, stdout=stdout, stderr=stderr, env=_env(env)
        )
        self.procs.append(proc)
        return proc

    def gearshift(self, *args: str, **kw: object) -> subprocess.Popen[bytes]:
        return self.start(gearshift_argv(*args), **kw)  # type: ignore[arg-type]

    def gearman(self, *args: str, **kw: object) -> subprocess.Popen[bytes]:
        assert GEARMAN is not None
        return self.start([GEARMAN, *args], **kw)  # type: ignore[arg-type]

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for stream in (proc.stdout, proc.stderr, proc.stdin):
                if stream is not None:
                    stream.close()


@pytest.fixture
def procs() -> Iterator[Procs]:
    p = Procs()
    yield p
    p.close()


@pytest.fixture
def server(
    make_any_server: Callable[..., ServerProcess], request: pytest.FixtureRequest
) -> ServerProcess:
    """A fresh server of each kind (C++ gearmand, then gearshift's own)."""
    kind = request.node.callspec.params.get("make_any_server")
    srv = make_any_server()
    srv.kind_name = kind  # type: ignore[attr-defined]
    return srv


@pytest.fixture
def gearmand(make_gearmand: Callable[..., ServerProcess]) -> ServerProcess:
    """A fresh C++ gearmand (for byte-for-byte comparisons with gearadmin/gearman)."""
    return make_gearmand()


class ScriptedWorker:
    """A worker speaking the raw protocol from a thread, replying with a fixed script.

    ``script(data)`` returns the packets to send for a job: a list of
    ``(PacketType, payload_args)`` where the handle is prepended automatically.
    Independent of gearshift's worker library, so it can test the client side.
    """

    def __init__(self, port: int, function: str, script: Script) -> None:
        import threading

        self.port = port
        self.function = function.encode()
        self.script = script
        self.jobs: list[bytes] = []
        self._stop = threading.Event()
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from gearshift.protocol.codec import Decoder, Packet, encode_request
        from gearshift.protocol.packets import PacketType as T

        s = self._sock
        dec = Decoder(allow_admin=False)
        s.sendall(encode_request(T.CAN_DO, self.function) + encode_request(T.GRAB_JOB))
        try:
            while not self._stop.is_set():
                chunk = s.recv(65536)
                if not chunk:
                    return
                for p in dec.feed(chunk):
                    assert isinstance(p, Packet)
                    if p.type == T.NO_JOB:
                        s.sendall(encode_request(T.PRE_SLEEP))
                    elif p.type == T.NOOP:
                        s.sendall(encode_request(T.GRAB_JOB))
                    elif p.type == T.JOB_ASSIGN:
                        handle, _fn, data = p.args
                        self.jobs.append(data)
                        out = b"".join(
                            encode_request(t, handle, *args) for t, args in self.script(data)
                        )
                        s.sendall(out + encode_request(T.GRAB_JOB))
        except OSError:
            return

    def close(self) -> None:
        self._stop.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._thread.join(5)


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedWorker]]:
    made: list[ScriptedWorker] = []

    def make(port: int, function: str, script: Script) -> ScriptedWorker:
        w = ScriptedWorker(port, function, script)
        made.append(w)
        wait_workers(port, function)
        return w

    yield make
    for w in made:
        w.close()


def raw_submit(port: int, function: str, data: bytes, timeout: float = 60.0) -> list[Reply]:
    """Submit one foreground job over a plain socket; return (type, args) up to its end."""
    from gearshift.protocol.codec import Decoder, Packet, encode_request
    from gearshift.protocol.packets import PacketType as T

    final = {T.WORK_COMPLETE, T.WORK_FAIL, T.WORK_EXCEPTION}
    got: list[Reply] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(encode_request(T.SUBMIT_JOB, function.encode(), b"", data))
        dec = Decoder(allow_admin=False)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed after {got}")
            for p in dec.feed(chunk):
                assert isinstance(p, Packet)
                if p.type == T.JOB_CREATED:
                    continue
                got.append((T(p.type), p.args[1:]))
                if p.type in final:
                    return got


def call(
    *args: str, input: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run ``gearshift ARGS`` in this process (no interpreter start-up): faster for loops.

    stdin, stdout and stderr are swapped for in-memory files, and ``env`` is added to
    the environment, for the duration.
    """

    with pytest.MonkeyPatch.context() as mp:
        for name, value in (env or {}).items():
            mp.setenv(name, value)
        return _call(args, input)


def _call(args: tuple[str, ...], input: bytes) -> subprocess.CompletedProcess[bytes]:
    import io

    import gearshift.cli

    out, err = io.BytesIO(), io.BytesIO()
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin = io.TextIOWrapper(io.BytesIO(input))
    sys.stdout = io.TextIOWrapper(out, write_through=True)
    sys.stderr = io.TextIOWrapper(err, write_through=True)
    try:
        code = gearshift.cli.main(list(args))
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        # Read before the wrappers are dropped: collecting them closes the buffers.
        stdout, stderr = out.getvalue(), err.getvalue()
        sys.stdin, sys.stdout, sys.stderr = saved
    return subprocess.CompletedProcess(list(args), code, stdout, stderr)
