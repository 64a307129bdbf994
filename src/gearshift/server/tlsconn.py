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

    #: Decrypted bytes arrive through ``data_received`` only, so a large payload is fed
    #: to its ``_PayloadReceiver`` from there.  Everything that bounds what a peer can
    #: make the server hold (the per-type limits checked at the header, a payload
    #: buffer that grows with the bytes received) is ``Connection``'s, and applies here
    #: unchanged.
    direct = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.identity = peer_identity(transport.get_extra_info("peercert"))
        super().connection_made(transport)
