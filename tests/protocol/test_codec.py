"""Codec tests with byte vectors, including the captured conversation of PROTOCOL.md 1.11."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gearshift.errors import (
    AdminLineTooLong,
    InvalidMagic,
    MalformedPacket,
    PacketTooLarge,
    UnknownPacketType,
)
from gearshift.protocol import AdminLine, Decoder, Packet, PacketType, encode_request
from gearshift.protocol.codec import encode_response
from gearshift.protocol.packets import ARGC, PACKET_ARGS, REQUEST_TYPES, RESPONSE_TYPES

UUID = b"d64c1f1c-7e7e-4f6e-9a9b-0123456789a1"


def h(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", ""))


def test_table_covers_all_42_types() -> None:
    assert len(PACKET_ARGS) == 42
    assert [int(t) for t in PACKET_ARGS] == list(range(1, 43))
    assert len(ARGC) == 43
    assert PacketType.STATUS_RES_UNIQUE == 42
    # every type except UNUSED has a direction
    for t in PacketType:
        if t is not PacketType.UNUSED:
            assert t in REQUEST_TYPES or t in RESPONSE_TYPES, t


def test_golden_vectors_from_protocol_1_11() -> None:
    assert encode_request(PacketType.CAN_DO, b"rev") == h("00524551 00000001 00000003 726576")
    assert encode_request(PacketType.GRAB_JOB_ALL) == h("00524551 00000027 00000000")
    assert encode_response(PacketType.NO_JOB) == h("00524553 0000000a 00000000")
    assert encode_request(PacketType.PRE_SLEEP) == h("00524551 00000004 00000000")
    assert encode_response(PacketType.JOB_CREATED, b"H:vm:1") == h(
        "00524553 00000008 00000006 483a766d3a31"
    )
    assert encode_response(PacketType.NOOP) == h("00524553 00000006 00000000")
    complete = h("00524551 0000000d 0000000c 483a766d3a3100 6f6c6c6568")
    assert encode_request(PacketType.WORK_COMPLETE, b"H:vm:1", b"olleh") == complete
    submit = encode_request(PacketType.SUBMIT_JOB, b"rev", UUID, b"hello")
    assert submit[:12] == h("00524551 00000007 0000002e")


def test_decode_submit_with_nul_in_data() -> None:
    d = Decoder()
    pkt = encode_request(PacketType.SUBMIT_JOB, b"f", b"u", b"a\0b\0c")
    assert d.feed(pkt) == [Packet(PacketType.SUBMIT_JOB, (b"f", b"u", b"a\0b\0c"), True)]


def test_decode_byte_by_byte_and_mixed_admin() -> None:
    stream = (
        encode_request(PacketType.ECHO_REQ, b"x\0y")
        + b"status\r\n"
        + encode_response(PacketType.JOB_ASSIGN_UNIQ, b"H:1", b"f", b"u", b"data")
        + b"version\n"
        + encode_request(PacketType.NOOP)
    )
    d = Decoder()
    out = []
    for i in range(len(stream)):
        out += d.feed(stream[i : i + 1])
    assert out == [
        Packet(PacketType.ECHO_REQ, (b"x\0y",), True),
        AdminLine(b"status"),
        Packet(PacketType.JOB_ASSIGN_UNIQ, (b"H:1", b"f", b"u", b"data"), False),
        AdminLine(b"version"),
        Packet(PacketType.NOOP, (), True),
    ]
    assert isinstance(out[1], AdminLine)
    assert d.buffered == 0


def test_large_payload_in_chunks() -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB
    pkt = encode_request(PacketType.WORK_COMPLETE, b"H:x:1", payload)
    d = Decoder()
    out = []
    for i in range(0, len(pkt), 65536):
        out += d.feed(pkt[i : i + 65536])
    assert out == [Packet(PacketType.WORK_COMPLETE, (b"H:x:1", payload), True)]


@pytest.mark.parametrize(
    ("data", "exc"),
    [
        (b"\0XYZ" + bytes(8), InvalidMagic),
        (b"\0REX", InvalidMagic),
        (h("00524551 00000000 00000000"), UnknownPacketType),
        (h("00524551 0000002b 00000000"), UnknownPacketType),
        (h("00524551 00000007 00000003") + b"abc", MalformedPacket),
        (h("00524551 00000010 00100000"), PacketTooLarge),
        (b"x" * 200, AdminLineTooLong),
    ],
)
def test_bad_input(data: bytes, exc: type[Exception]) -> None:
    d = Decoder(max_packet_size=1024, max_line=100)
    with pytest.raises(exc):
        d.feed(data)


def test_client_side_rejects_text() -> None:
    with pytest.raises(InvalidMagic):
        Decoder(allow_admin=False).feed(b"OK\n")


def test_max_packet_size_bounds() -> None:
    Decoder(max_packet_size=2**32 - 1)
    with pytest.raises(ValueError):
        Decoder(max_packet_size=2**32)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(sorted(PacketType)),
            st.lists(st.binary(max_size=20), min_size=8, max_size=8),
        ),
        max_size=10,
    ),
    st.integers(min_value=1, max_value=50),
)
def test_roundtrip_any_chunking(msgs: list[tuple[PacketType, list[bytes]]], chunk: int) -> None:
    expected = []
    stream = b""
    for ptype, pool in msgs:
        argc = ARGC[ptype]
        args = [a.replace(b"\0", b"") for a in pool[: max(argc - 1, 0)]]
        if argc:
            args.append(pool[-1])  # last argument may hold NULs
        stream += encode_request(ptype, *args)
        expected.append(Packet(ptype, tuple(args), True))
    d = Decoder()
    out = []
    for i in range(0, len(stream), chunk):
        out += d.feed(stream[i : i + chunk])
    assert out == expected


@pytest.mark.parametrize("size", [0, 65535, 65536, 1 << 20])
def test_large_packets_encode_the_same_bytes(size: int) -> None:
    # From 64 KiB up the encoder joins header, arguments and payload in one copy.
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    for args in ((payload,), (b"H:1", payload), (b"f", b"", payload)):
        body = b"\0".join(args)
        assert encode_request(PacketType.SUBMIT_JOB, *args) == (
            b"\0REQ" + struct.pack(">II", PacketType.SUBMIT_JOB, len(body)) + body
        )
        assert encode_response(PacketType.WORK_COMPLETE, *args) == (
            b"\0RES" + struct.pack(">II", PacketType.WORK_COMPLETE, len(body)) + body
        )
    (packet,) = Decoder(allow_admin=False).feed(
        encode_response(PacketType.WORK_DATA, b"H:1", payload)
    )
    assert isinstance(packet, Packet) and packet.args == (b"H:1", payload)
