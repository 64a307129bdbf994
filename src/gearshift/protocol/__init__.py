"""The Gearman wire protocol, sans I/O: bytes in, events out, bytes to send back.

Nothing in this package imports asyncio, socket, time or logging.
"""

from gearshift.protocol.codec import (
    AdminLine,
    Decoder,
    Event,
    Packet,
    encode,
    encode_admin,
    encode_error,
    encode_request,
    encode_response,
)
from gearshift.protocol.packets import PACKET_ARGS, REQ, RES, PacketType, Priority

__all__ = [
    "PACKET_ARGS",
    "REQ",
    "RES",
    "AdminLine",
    "Decoder",
    "Event",
    "Packet",
    "PacketType",
    "Priority",
    "encode",
    "encode_admin",
    "encode_error",
    "encode_request",
    "encode_response",
]
