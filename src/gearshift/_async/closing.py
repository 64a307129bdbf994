"""``async with`` for the asyncio classes that end with ``aclose()`` (the worker: ``stop()``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class AsyncClosing(ABC):
    """``async with obj:`` returns ``obj`` and awaits ``obj.aclose()`` on the way out
    (or what a subclass's ``_on_exit`` does instead)."""

    __slots__ = ()

    @abstractmethod
    async def aclose(self) -> None:
        """Close every connection; the object cannot be used afterwards."""

    async def _on_exit(self) -> None:
        """What leaving the ``async with`` block awaits: ``aclose()``."""
        await self.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._on_exit()
