"""A private event loop on a daemon thread, so blocking code can drive async code.

The blocking Client, Worker and AdminClient each own one Portal and call their async
twin's coroutines through it (the idea of ``anyio.from_thread``).  All protocol logic
therefore exists once, in ``gearshift._async``; the blocking classes only forward.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Protocol, Self, TypeVar

from gearshift.errors import ClosedError

T = TypeVar("T")
S = TypeVar("S")
P = ParamSpec("P")


class Portal:
    """Runs coroutines on an event loop owned by a background thread.

    Args:
        name: the thread's name (shows up in thread dumps and logs).
    """

    def __init__(self, name: str = "gearshift-portal") -> None:
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._started.wait()
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once close() was called."""
        return self._closed

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The portal's event loop."""
        return self._loop

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        loop.call_soon(self._started.set)
        try:
            loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def _check(self) -> None:
        if self._closed:
            raise ClosedError("the blocking wrapper is closed")
        if threading.current_thread() is self._thread:
            raise RuntimeError("blocking call made from the portal's own event loop thread")

    def call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the loop and wait for its result.

        An interrupt (Ctrl-C) while waiting cancels the coroutine and is re-raised.
        """
        self._check()
        future = asyncio.run_coroutine_threadsafe(fn(*args, **kwargs), self._loop)
        try:
            return future.result()
        except BaseException:
            if not future.done():
                future.cancel()
                with contextlib.suppress(BaseException):
                    future.result(timeout=5)
            raise

    def submit(
        self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        """Start ``fn(*args, **kwargs)`` on the loop; return a concurrent Future for it."""
        self._check()
        return asyncio.run_coroutine_threadsafe(fn(*args, **kwargs), self._loop)

    def call_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a plain function on the loop thread (it may touch loop-owned state)."""
        self._check()
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn(*args))
            except BaseException as exc:
                done.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return done.result()

    def close(self) -> None:
        """Stop the loop (cancelling what still runs on it) and join the thread."""
        if self._closed:
            return
        self._closed = True
        if threading.current_thread() is self._thread:
            self._loop.stop()
            return
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()


def twin_arguments(
    twin: Callable[P, object],
) -> Callable[[Callable[Concatenate[S, ...], None]], Callable[Concatenate[S, P], None]]:
    """Decorate a blocking class's ``__init__(self, *args, **kwargs)`` that hands its
    arguments to the async twin, so that it takes exactly the twin's parameters.

    Type checkers check calls against the twin's constructor, and ``inspect.signature``
    (``help()``) shows its parameters, through ``__wrapped__``.
    """

    def decorate(init: Callable[Concatenate[S, ...], None]) -> Callable[Concatenate[S, P], None]:
        functools.update_wrapper(init, twin.__init__, assigned=(), updated=())
        return init

    return decorate


class _AsyncTwin(Protocol):
    async def aclose(self) -> None: ...


class PortalOwner:
    """The lifecycle the blocking Client, Worker and AdminClient share.

    Each owns one Portal and its async twin; ``close()`` (also on leaving a ``with``
    block) runs the twin's ``aclose()`` on the portal's loop, then ends the loop thread.
    """

    _portal: Portal
    _async: _AsyncTwin

    def _build_twin(self, cls: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``cls(*args, **kwargs)``, built on the portal's loop so that everything it
        creates belongs to that loop.  If it raises, the portal's thread is stopped."""

        async def build() -> T:
            return cls(*args, **kwargs)

        try:
            return self._portal.call(build)
        except BaseException:
            self._portal.close()
            raise

    def close(self) -> None:
        """Close the async twin and stop the private event loop thread."""
        if not self._portal.closed:
            self._portal.call(self._async.aclose)
            self._portal.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
