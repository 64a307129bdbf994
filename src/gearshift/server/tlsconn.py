"""Connections on a TLS listener: the verified client certificate names the peer."""

from __future__ import annotations

import asyncio

from gearshift.server.connection import Connection
from gearshift.tls import peer_identity

__all__ = ["TLSConnection"]


class TLSConnection(Connection):
    """A ``Connection`` whose ``identity`` is its client certificate's common name.

    asyncio calls ``connection_made`` only after the handshake, so the certificate
    is known before the first packet.
    """

    __slots__ = ()

    direct = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.identity = peer_identity(transport.get_extra_info("peercert"))
        super().connection_made(transport)
