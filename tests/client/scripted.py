"""Scripted servers on fake transports: connection tests without sockets or processes.

``FakeTransport`` records what a ``Connection`` writes, one entry per ``write()``, and
hands each write to a script that answers with bytes (delivered on a later loop pass,
as a network would), with ``HANG_UP`` (the server drops the connection) or with
nothing.  ``ScriptedNetwork`` stands in for ``gearshift._async.net.open_transport``:
``AsyncClient``, ``AsyncWorker`` and ``AsyncAdminClient`` then run unchanged on top.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import pytest

from gearshift._async import net
from gearshift.addresses import ServerAddress
from gearshift.errors import ConnectError
from gearshift.protocol.codec import Decoder, Packet


@dataclass(frozen=True)
class HangUp:
    """A script's answer: send ``data`` (if any), then drop the connection."""

    data: bytes = b""


#: Drop the connection without a word.
HANG_UP: Final = HangUp()

#: What a script sees (the bytes of one write) and what it answers.
Script = Callable[[bytes], "bytes | HangUp | None"]


class FakeTransport(asyncio.Transport):
    """A transport that records writes and answers them with ``script``."""

    def __init__(self, protocol: asyncio.Protocol, script: Script | None = None) -> None:
        super().__init__()
        self.protocol = protocol
        self.script = script
        self.writes: list[bytes] = []
        self.limits: tuple[int | None, int | None] | None = None
        self.closing = False
        self.aborted = False
        self._loop = asyncio.get_running_loop()

    # -- what the connection calls --------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closing, "write after close"
        chunk = bytes(data)
        self.writes.append(chunk)
        answer = self.script(chunk) if self.script is not None else None
        if isinstance(answer, HangUp):
            if answer.data:
                self._loop.call_soon(self.deliver, answer.data)
            self._loop.call_soon(self.hang_up)
        elif answer:
            self._loop.call_soon(self.deliver, answer)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.limits = (high, low)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self._loop.call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    # -- what the test (the "server") does ------------------------------------------------

    def deliver(self, data: bytes) -> None:
        """The server sends ``data``."""
        if not self.closing:
            self.protocol.data_received(data)

    def hang_up(self, error: Exception | None = None) -> None:
        """The server drops the connection (``error`` as the transport would report it)."""
        if not self.closing:
            self.closing = True
            self.protocol.connection_lost(error)

    @property
    def data(self) -> bytes:
        """Everything written so far."""
        return b"".join(self.writes)


def packet_script(answer: Callable[[Packet], bytes | HangUp | None]) -> Script:
    """A binary-protocol script: ``answer`` is called per packet the client sends.

    The answers to one write's packets are joined; a HangUp among them drops the
    connection after the answers before it.
    """
    decoder = Decoder(allow_admin=False)

    def script(data: bytes) -> bytes | HangUp | None:
        out: list[bytes] = []
        for packet in decoder.feed(data):
            assert isinstance(packet, Packet)
            reply = answer(packet)
            if isinstance(reply, HangUp):
                return HangUp(b"".join(out) + reply.data)
            if reply:
                out.append(reply)
        return b"".join(out)

    return script


class ScriptedNetwork:
    """Servers by port, reached through a patched ``net.open_transport``.

    ``add(script)`` returns the address of a new scripted server; every connection made
    to it gets a FakeTransport running that script, listed in ``transports[address]``.
    A connect to an address nobody added is refused (ConnectError).
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.scripts: dict[ServerAddress, Callable[[], Script]] = {}
        self.transports: dict[ServerAddress, list[FakeTransport]] = {}
        monkeypatch.setattr(net, "open_transport", self.open_transport)

    def add(self, script: Callable[[], Script], port: int | None = None) -> ServerAddress:
        """A server whose every connection runs a fresh ``script()``."""
        address = ServerAddress("127.0.0.1", port or 50000 + len(self.scripts))
        self.scripts[address] = script
        self.transports[address] = []
        return address

    async def open_transport(
        self, address: ServerAddress, protocol: asyncio.Protocol, **_: object
    ) -> asyncio.BaseTransport:
        make = self.scripts.get(address)
        if make is None:
            raise ConnectError(f"cannot connect to {address}: refused")
        transport = FakeTransport(protocol, make())
        self.transports[address].append(transport)
        protocol.connection_made(transport)
        return transport
