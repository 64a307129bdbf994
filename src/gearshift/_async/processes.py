"""Child processes for blocking handlers: ``AsyncWorker(executor="process")``.

Each busy concurrency slot owns one child process, started with the ``spawn`` method
(never ``fork``: the parent runs an event loop and threads).  Parent and child talk over
one ``multiprocessing`` pipe, one job at a time:

    parent -> child   (handler, _JobSpec)                     pickled; the handler by reference
    child -> parent   ("data", x) ("warning", x) ("status", n, d) ("fail",)   any number
                      ("result", value) | ("error", ...)                      exactly one

In the parent a thread of the worker's thread pool sends the job and relays each update
to the real ``WorkerJob`` (whose methods are thread-safe and keep their order with the
final packet), then returns the result or raises the handler's exception, so the
worker's ordinary completion code sends WORK_COMPLETE / WORK_EXCEPTION / WORK_FAIL.

Payloads are decoded and encoded with the worker's codec in the parent; the child gets
``data`` already decoded and sends plain objects back.  A timeout or a cancelled job
SIGKILLs its child; a child that dies (killed, segfault, ``os._exit``) fails the job
with a ``ChildProcessError`` naming the exit code or signal.  A dead child is reaped and
dropped, and the next job that needs a slot starts a fresh one.  ``close()`` ends every
child: idle ones exit on end-of-file on their pipe, stragglers are killed.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import pickle
import signal
import threading
import traceback
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import ForkingPickler
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gearshift._async.worker import WorkerJob

_CONTEXT = multiprocessing.get_context("spawn")
#: Seconds an idle child gets to exit on its own after its pipe is closed.
_EXIT_GRACE = 2.0


@dataclass(frozen=True, slots=True)
class _JobSpec:
    handle: str
    function: str
    unique: str
    reducer: str
    raw: bytes
    data: Any


class ProcessJob:
    """The job a handler receives in a child process.

    The same attributes as WorkerJob (``handle``, ``function``, ``unique``, ``reducer``,
    ``raw``, ``data``) and the same methods: ``send_data``, ``send_warning`` and
    ``send_status`` forward to the worker process, which sends the packets in order
    before the job's result; ``fail`` ends the job with WORK_FAIL.  Objects given to
    ``send_data`` / ``send_warning`` must be picklable; the worker encodes them with its
    codec.
    """

    def __init__(self, spec: _JobSpec, conn: multiprocessing.connection.Connection) -> None:
        self.handle = spec.handle
        self.function = spec.function
        self.unique = spec.unique
        self.reducer = spec.reducer
        self.raw = spec.raw
        self.data = spec.data
        self._conn = conn

    def __repr__(self) -> str:
        return f"<ProcessJob {self.function} handle={self.handle}>"

    def send_data(self, data: Any) -> None:
        """WORK_DATA: send a chunk of partial output."""
        self._conn.send(("data", data))

    def send_warning(self, data: Any) -> None:
        """WORK_WARNING: send a warning to the client."""
        self._conn.send(("warning", data))

    def send_status(self, numerator: int, denominator: int) -> None:
        """WORK_STATUS: report progress."""
        self._conn.send(("status", int(numerator), int(denominator)))

    def fail(self) -> None:
        """WORK_FAIL: end the job as failed; the handler's return value is then ignored."""
        self._conn.send(("fail",))


def unpicklable(handler: Any) -> Exception | None:
    """Why ``handler`` cannot be sent to a child process, or None if it can."""
    try:
        ForkingPickler.dumps(handler)
    except Exception as exc:
        return exc
    return None


def _error_message(exc: BaseException) -> tuple[Any, ...]:
    kind = type(exc)
    text = "".join(traceback.format_exception(exc))
    try:
        blob: bytes | None = bytes(ForkingPickler.dumps(exc))
    except Exception:
        blob = None
    return ("error", blob, kind.__module__, kind.__qualname__, str(exc), text)


def _child_main(conn: multiprocessing.connection.Connection) -> None:
    """The child's loop: one job at a time until the parent closes the pipe."""
    # Ctrl-C reaches the whole process group; the parent decides what a stop means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            request = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            handler, spec = pickle.loads(request)
        except Exception as exc:
            conn.send_bytes(ForkingPickler.dumps(_error_message(exc)))
            continue
        try:
            result = handler(ProcessJob(spec, conn))
        except Exception as exc:
            reply = ForkingPickler.dumps(_error_message(exc))
        else:
            try:
                reply = ForkingPickler.dumps(("result", result))
            except Exception as exc:
                problem = TypeError(f"the handler's return value cannot be pickled: {exc}")
                reply = ForkingPickler.dumps(_error_message(problem))
        conn.send_bytes(reply)


class _RemoteTraceback(Exception):
    """The child's formatted traceback, attached as ``__cause__`` of the re-raised error."""

    def __str__(self) -> str:
        return f"\n\n{self.args[0]}" if self.args else ""


def _rebuild_error(message: tuple[Any, ...]) -> BaseException:
    _, blob, module, qualname, text, tb = message
    exc: BaseException | None = None
    if blob is not None:
        with contextlib.suppress(Exception):
            loaded = pickle.loads(blob)
            if isinstance(loaded, BaseException):
                exc = loaded
    if exc is None:
        # Not picklable (or not unpicklable here): a stand-in with the same name and
        # message, so the WORK_EXCEPTION payload reads the same.
        stand_in = type(
            qualname.rpartition(".")[2],
            (Exception,),
            {"__module__": module, "__qualname__": qualname},
        )
        exc = stand_in(text)
    exc.__cause__ = _RemoteTraceback(tb)
    return exc


class _Child:
    """One child process and the parent's end of its pipe.

    ``run`` is blocking and runs in a pool thread; ``kill`` may be called from any
    thread (the event loop, on a timeout or cancel).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: BaseProcess | None = None
        self._conn: multiprocessing.connection.Connection | None = None
        self._killed = False
        self._reaped = False
        self.broken = False  # dead, killed or out of step: never reuse

    def _start(self) -> multiprocessing.connection.Connection:
        with self._lock:
            if self._killed:
                raise ChildProcessError("the job was stopped before its process started")
            parent_end, child_end = _CONTEXT.Pipe(duplex=True)
            process = _CONTEXT.Process(
                target=_child_main, args=(child_end,), name="gearshift-job", daemon=True
            )
            try:
                process.start()
            finally:
                child_end.close()
            self._process, self._conn = process, parent_end
            return parent_end

    def alive(self) -> bool:
        """Not broken, and the process (if started) has not exited."""
        if self.broken:
            return False
        return self._process is None or self._process.is_alive()

    def kill(self) -> None:
        """SIGKILL the child (the relaying thread then sees the pipe close)."""
        with self._lock:
            self._killed = True
            self.broken = True
            if self._process is not None:
                with contextlib.suppress(Exception):
                    self._process.kill()

    def _died(self, job: WorkerJob[Any]) -> ChildProcessError:
        process = self._process
        assert process is not None
        process.join(_EXIT_GRACE)
        code = process.exitcode
        if self._killed:
            how = "was killed by the worker"
        elif code is None:
            how = "closed its pipe"
        elif code < 0:
            try:
                how = f"was killed by signal {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        return ChildProcessError(
            f"the process running job {job.handle} ({job.function}), pid {process.pid}, {how}"
        )

    def run(self, handler: Any, job: WorkerJob[Any]) -> Any:
        """Run ``handler`` on ``job`` in the child; relay updates; return the result."""
        spec = _JobSpec(job.handle, job.function, job.unique, job.reducer, job.raw, job.data)
        try:
            request = ForkingPickler.dumps((handler, spec))
        except Exception as exc:
            if unpicklable(handler) is not None:
                raise TypeError(
                    f"the handler for {job.function!r} cannot run in a child process: it must"
                    f" be picklable (a module-level function, not a lambda or closure): {exc}"
                ) from exc
            raise TypeError(
                f"the data of job {job.handle} cannot be sent to a child process: {exc}"
            ) from exc
        if self.broken:
            raise ChildProcessError("the job was stopped before it started")
        conn = self._conn if self._conn is not None else self._start()
        finished = False
        try:
            try:
                conn.send_bytes(request)
            except OSError:
                raise self._died(job) from None
            while True:
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    raise self._died(job) from None
                kind = message[0]
                if kind == "result":
                    finished = True
                    return message[1]
                if kind == "error":
                    finished = True
                    raise _rebuild_error(message)
                if kind == "data":
                    job.send_data(message[1])
                elif kind == "warning":
                    job.send_warning(message[1])
                elif kind == "status":
                    job.send_status(message[1], message[2])
                elif kind == "fail":
                    job.fail()
                else:
                    raise ChildProcessError(f"unexpected message from a job process: {kind!r}")
        finally:
            if not finished:
                # Out of step with the child (it died, or relaying an update raised):
                # it must not take another job.
                self.kill()
                self.close()

    def hang_up(self) -> None:
        """Close the parent's end of the pipe: an idle child sees end-of-file and exits."""
        self.broken = True
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()

    def close(self) -> None:
        """End the child: hang up, give it a moment to exit, kill it if needed; reap it."""
        self.hang_up()
        with self._lock:
            if self._reaped:
                return
            self._reaped = True
            process = self._process
        if process is None:
            return
        process.join(_EXIT_GRACE)
        if process.exitcode is None:
            with contextlib.suppress(Exception):
                process.kill()
            process.join()
        with contextlib.suppress(Exception):
            process.close()


class ProcessPool:
    """Children reused between jobs; the worker's concurrency slots bound how many are busy.

    ``take`` and ``give`` are called on the event loop; ``close`` blocks and belongs in
    a thread.
    """

    def __init__(self) -> None:
        self._idle: list[_Child] = []
        self._children: set[_Child] = set()
        self._lock = threading.Lock()
        self._closed = False

    def take(self) -> _Child:
        """An idle child, or a new one (its process starts with its first job)."""
        with self._lock:
            if self._closed:
                raise ChildProcessError("the worker's process pool is closed")
            while self._idle:
                child = self._idle.pop()
                if child.alive():
                    return child
                self._children.discard(child)
                child.close()  # died while idle (OOM killer, a stray kill): reap it
            child = _Child()
            self._children.add(child)
            return child

    def give(self, child: _Child) -> None:
        """Return ``child`` after a job; a broken one is dropped (it reaps itself)."""
        with self._lock:
            if child.broken or self._closed:
                self._children.discard(child)
                if self._closed:
                    child.kill()
                return
            self._idle.append(child)

    def close(self) -> None:
        """End every child and wait for them (blocking).

        Idle children exit on end-of-file; a child still running a job is killed.
        """
        with self._lock:
            self._closed = True
            children = list(self._children)
            idle = set(self._idle)
            self._children.clear()
            self._idle.clear()
        for child in children:
            if child in idle:
                child.hang_up()
            else:
                child.kill()
        for child in children:
            child.close()
