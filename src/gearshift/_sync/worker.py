"""Worker: the blocking face of AsyncWorker.

The AsyncWorker runs on the Worker's private event loop thread; plain-function handlers
run where ``executor`` says (its thread pool, child processes, or that loop thread),
``async def`` handlers on that loop.  ``run()`` blocks the
calling thread; in the main thread it maps SIGTERM and the first SIGINT to a graceful
stop and a second SIGINT to an immediate one, restoring the previous handlers after.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from gearshift._async.worker import AsyncWorker, FunctionDecorator, Handler
from gearshift._sync.portal import Portal, PortalOwner, twin_arguments
from gearshift.addresses import ServerAddress


class Worker(PortalOwner, FunctionDecorator):
    """Blocking worker; the arguments are AsyncWorker's (hooks run on its loop thread).

    Use it as a context manager, or call ``close()``: it owns a thread.
    """

    @twin_arguments(AsyncWorker)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._portal = Portal("gearshift-worker")
        self._async: AsyncWorker = self._build_twin(AsyncWorker, *args, **kwargs)
        self.servers = self._async.servers

    @property
    def functions(self) -> list[str]:
        """The registered function names."""
        return self._async.functions

    @property
    def connected(self) -> list[ServerAddress]:
        """Servers with a live connection right now."""
        return self._async.connected

    @property
    def jobs_done(self) -> int:
        """Jobs finished since the worker started."""
        return self._async.jobs_done

    def register(
        self, function: str | bytes, handler: Handler, *, timeout: float | None = None
    ) -> None:
        """Register ``handler(job)`` for ``function``; see AsyncWorker.register."""
        self._portal.call_sync(lambda: self._async.register(function, handler, timeout=timeout))

    def unregister(self, function: str | bytes) -> None:
        """CANT_DO for ``function``."""
        self._portal.call_sync(self._async.unregister, function)

    def reset_abilities(self) -> None:
        """RESET_ABILITIES: forget every function."""
        self._portal.call_sync(self._async.reset_abilities)

    def set_client_id(self, client_id: str) -> None:
        """SET_CLIENT_ID now and after every reconnect."""
        self._portal.call_sync(self._async.set_client_id, client_id)

    def run(self) -> None:
        """Run jobs until ``stop()`` is called (from another thread) or a signal arrives."""
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            interrupts = 0

            def on_signal(signum: int, frame: FrameType | None) -> None:
                nonlocal interrupts
                if signum == signal.SIGINT:
                    interrupts += 1
                self._portal.submit(self._async.stop, graceful=interrupts < 2)

            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, on_signal)
        try:
            self._portal.call(self._async.run, install_signal_handlers=False)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def work_once(self, timeout: float | None = None) -> bool:
        """Run one job, waiting up to ``timeout`` seconds; see AsyncWorker.work_once."""
        return self._portal.call(self._async.work_once, timeout)

    def stop(self, graceful: bool = True) -> None:
        """Stop the worker (thread-safe); see AsyncWorker.stop."""
        if not self._portal.closed:
            self._portal.call(self._async.stop, graceful)
