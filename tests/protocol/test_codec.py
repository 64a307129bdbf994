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
from gearshift.protocol.packets import (
    ARG_LIMIT,
    ARGC,
    BODY_LIMIT,
    HEADER_SIZE,
    MAX_PACKET_LIMIT,
    PACKET_ARGS,
    PAYLOAD_TYPES,
    REQUEST_TYPES,
    RESPONSE_TYPES,
)

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


# ---------------------------------------------------------------- per-type size limits

G = 1 << 30
NO_PAYLOAD = [t for t in PacketType if t not in PAYLOAD_TYPES]


def header(ptype: int, size: int, magic: bytes = b"\0REQ") -> bytes:
    return magic + struct.pack(">II", ptype, size)


def body_of(ptype: PacketType, size: int) -> bytes:
    """A well-formed body of exactly ``size`` bytes (one-byte leading arguments)."""
    argc = ARGC[ptype]
    if argc == 0:
        return b"x" * size
    lead = b"1\0" * (argc - 1)
    return lead + b"x" * (size - len(lead))


def test_limit_table_matches_the_packet_layouts() -> None:
    # Every type with a payload ends in a "data" argument, and only those do.
    for t in PacketType:
        assert (t in PAYLOAD_TYPES) == (PACKET_ARGS[t][-1:] == ("data",)), t
        assert BODY_LIMIT[t] == (MAX_PACKET_LIMIT if t in PAYLOAD_TYPES else ARG_LIMIT), t
    assert ARG_LIMIT == 8192


@pytest.mark.parametrize("ptype", NO_PAYLOAD, ids=lambda t: t.name)
def test_type_without_payload_is_refused_from_its_header(ptype: PacketType) -> None:
    # The header alone is enough: nothing of the body has to arrive (or be kept).
    with pytest.raises(PacketTooLarge, match=f"{ptype.name} body of 8193 bytes exceeds 8192"):
        Decoder().feed(header(ptype, ARG_LIMIT + 1))
    with pytest.raises(PacketTooLarge, match=f"{ptype.name} body of {G} bytes"):
        Decoder().feed(header(ptype, G))
    # At the limit it is decoded as before.
    (packet,) = Decoder().feed(header(ptype, ARG_LIMIT) + body_of(ptype, ARG_LIMIT))
    assert isinstance(packet, Packet) and packet.type == ptype


def test_response_without_payload_is_refused_on_the_client_side_too() -> None:
    d = Decoder(allow_admin=False)
    with pytest.raises(PacketTooLarge, match="STATUS_RES body"):
        d.feed(header(PacketType.STATUS_RES, 100_000, b"\0RES"))


@pytest.mark.parametrize("ptype", sorted(PAYLOAD_TYPES), ids=lambda t: t.name)
def test_each_argument_before_a_payload_is_shorter_than_the_limit(ptype: PacketType) -> None:
    names = PACKET_ARGS[ptype]
    for i, name in enumerate(names[:-1]):
        lead = b"a\0" * i
        # 8191 bytes and its NUL: accepted, and the decoder waits for the payload.
        ok = Decoder()
        assert ok.feed(header(ptype, G) + lead + b"f" * (ARG_LIMIT - 1) + b"\0") == []
        # 8192 bytes without a NUL: refused then, not once the gigabyte is in.
        bad = Decoder()
        assert bad.feed(header(ptype, G) + lead + b"f" * (ARG_LIMIT - 1)) == []
        with pytest.raises(PacketTooLarge, match=f"{ptype.name} of {G} bytes: its {name} "):
            bad.feed(b"f")
    # A payload of any size is fine (here 1 MiB, the leading arguments at 8191 bytes).
    args = [b"f" * (ARG_LIMIT - 1)] * (len(names) - 1) + [b"\0" * (1 << 20)]
    magic = b"\0REQ" if ptype in REQUEST_TYPES else b"\0RES"
    packet = encode_request(ptype, *args) if magic == b"\0REQ" else encode_response(ptype, *args)
    assert Decoder().feed(packet) == [Packet(ptype, tuple(args), magic == b"\0REQ")]


def test_argument_limit_in_a_complete_packet() -> None:
    # Within one feed, a complete packet with a too-long function name is refused too.
    packet = encode_request(PacketType.SUBMIT_JOB_BG, b"f" * ARG_LIMIT, b"", b"data")
    with pytest.raises(PacketTooLarge, match="its function argument"):
        Decoder().feed(packet)
    ok = encode_request(PacketType.SUBMIT_JOB_BG, b"f" * (ARG_LIMIT - 1), b"", b"data")
    assert Decoder().feed(ok)[0] == Packet(
        PacketType.SUBMIT_JOB_BG, (b"f" * (ARG_LIMIT - 1), b"", b"data"), True
    )


def test_leading_arguments_dribbled_byte_by_byte() -> None:
    # The decoder looks again with every byte while the leading arguments arrive, so a
    # unique that never ends is refused at its 8192nd byte.
    d = Decoder()
    d.feed(header(PacketType.SUBMIT_JOB, G) + b"fn\0")
    for _ in range(ARG_LIMIT - 1):
        assert d.feed(b"u") == []
    assert d.buffered == HEADER_SIZE + 3 + ARG_LIMIT - 1
    with pytest.raises(PacketTooLarge, match="its unique argument"):
        d.feed(b"u")


def test_large_payload_buffer_follows_the_bytes_received() -> None:
    # A gigabyte announced and 1 KiB sent: 1 KiB kept, the rest waited for.
    d = Decoder()
    start = header(PacketType.SUBMIT_JOB, G) + b"fn\0\0" + b"x" * 1024
    assert d.feed(start) == []
    assert d.buffered == len(start)


def test_malformed_large_packet_is_still_malformed() -> None:
    # A body above the limit whose unique lacks its NUL, but ends before 8192 bytes of
    # it: not too long, malformed (as it would be if it were small).
    body = b"f" * 8000 + b"\0" + b"u" * 500
    with pytest.raises(MalformedPacket):
        Decoder().feed(header(PacketType.SUBMIT_JOB, len(body)) + body)
