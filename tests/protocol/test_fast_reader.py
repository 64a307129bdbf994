"""The one packet reader, its tables and the encoders: dispatching and collecting read
the same, and every table agrees with the packet layouts.  No sockets."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gearshift.errors import AdminLineTooLong, InvalidMagic, MalformedPacket, PacketTooLarge
from gearshift.protocol.codec import (
    ERROR_TEXTS,
    ERRORS,
    AdminLine,
    Decoder,
    Packet,
    PacketReader,
    encode,
    encode_admin,
    encode_response,
    response_parts,
)
from gearshift.protocol.packets import (
    ARG_LIMIT,
    MAX_PACKET_TYPE,
    PACKET_ARGS,
    REQ,
    RES,
    SUBMIT_TYPES,
    SUBMITS,
    PacketType,
    Priority,
)


class Owner:
    """Records what a dispatching reader hands over."""

    def __init__(self) -> None:
        self.closed = False
        self.seen: list[Packet | AdminLine] = []
        self.large: list[tuple[int, bool, list[bytes], bytes, int]] = []
        #: Close after this many messages (to check that reading stops).
        self.close_after = -1

    def handler(self, ptype: int, request: bool) -> Any:
        def run(owner: Owner, args: list[bytes]) -> None:
            assert owner is self
            self._note(Packet(ptype, tuple(args), request))

        return run

    def admin(self, line: AdminLine) -> None:
        self._note(line)

    def _note(self, event: Packet | AdminLine) -> None:
        self.seen.append(event)
        if len(self.seen) == self.close_after:
            self.closed = True

    def on_large(
        self, ptype: int, request: bool, heads: list[bytes], first: memoryview, size: int
    ) -> None:
        self.large.append((ptype, request, heads, bytes(first), size))


def dispatching(owner: Owner, **options: Any) -> PacketReader:
    reader = PacketReader(**options)
    types = range(MAX_PACKET_TYPE + 1)
    reader.dispatch_to(
        owner,
        [owner.handler(t, True) for t in types],
        [owner.handler(t, False) for t in types],
        owner.admin,
        on_large=owner.on_large,
        big_packet=1024,
    )
    return reader


messages = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(sorted(PacketType)),
            st.booleans(),
            st.lists(st.binary(max_size=40), min_size=8, max_size=8),
        ),
        st.binary(min_size=1, max_size=30).map(
            lambda b: bytes(c if c not in (0, 10, 13) else 65 for c in b)
        ),
    ),
    max_size=12,
)


def _wire(msgs: list[Any]) -> tuple[bytes, list[Packet | AdminLine]]:
    data = b""
    expected: list[Packet | AdminLine] = []
    for msg in msgs:
        if isinstance(msg, bytes):
            data += encode_admin(msg)
            expected.append(AdminLine(msg))
            continue
        ptype, request, pool = msg
        argc = len(PACKET_ARGS[ptype])
        # Only the last argument may hold NULs.
        args = [a.replace(b"\0", b"") for a in pool[: argc - 1]] + [pool[-1]] if argc else []
        data += encode(ptype, *args, magic=REQ if request else RES)
        expected.append(Packet(ptype, tuple(args), request))
    return data, expected


@given(messages, st.integers(1, 64))
def test_dispatching_reads_what_collecting_reads(msgs: list[Any], chunk: int) -> None:
    data, expected = _wire(msgs)
    owner = Owner()
    reader = dispatching(owner)
    decoder = Decoder()
    collected: list[Packet | AdminLine] = []
    for i in range(0, len(data), chunk):
        reader.feed(data[i : i + chunk])
        collected += decoder.feed(data[i : i + chunk])
    assert owner.seen == expected
    assert collected == expected
    assert reader.buffered == 0 and decoder.buffered == 0
    assert sum(reader.counts) == len(expected)


def test_dispatching_stops_when_the_owner_closes() -> None:
    owner = Owner()
    owner.close_after = 2
    reader = dispatching(owner)
    reader.feed(encode(PacketType.ECHO_REQ, b"1") * 3 + b"status\n")
    assert len(owner.seen) == 2


def test_handlers_are_read_per_packet_so_one_may_swap_them() -> None:
    owner = Owner()
    reader = dispatching(owner)
    held: list[list[bytes]] = []

    def hold(o: Owner, args: list[bytes]) -> None:
        held.append(args)

    def swap(o: Owner, args: list[bytes]) -> None:
        reader.requests = [hold] * (MAX_PACKET_TYPE + 1)

    tables = list(reader.requests or [])
    tables[PacketType.CAN_DO] = swap
    reader.requests = tables
    reader.feed(encode(PacketType.CAN_DO, b"f") + encode(PacketType.ECHO_REQ, b"x"))
    assert held == [[b"x"]] and owner.seen == []


def test_a_large_payload_goes_to_its_owner_once_its_leading_arguments_are_in() -> None:
    owner = Owner()
    reader = dispatching(owner)
    payload = b"p" * 20_000  # above ARG_LIMIT: a body that may be received on its own
    packet = encode(PacketType.SUBMIT_JOB, b"f", b"u", payload)
    reader.feed(packet[:14])  # the header and the function only: wait for the unique
    assert owner.large == [] and reader.buffered == 14
    reader.feed(packet[14:100])
    assert owner.large == [(PacketType.SUBMIT_JOB, True, [b"f", b"u"], payload[:84], 20_000)]


def test_collecting_keeps_a_large_payload_in_its_buffer() -> None:
    decoder = Decoder()
    payload = b"p" * 20_000
    packet = encode(PacketType.SUBMIT_JOB, b"f", b"u", payload)
    assert decoder.feed(packet[:100]) == []
    assert decoder.feed(packet[100:]) == [Packet(PacketType.SUBMIT_JOB, (b"f", b"u", payload))]


@pytest.mark.parametrize(
    ("data", "exc", "text"),
    [
        (b"\0XYZ" + bytes(8), InvalidMagic, "bad magic"),
        (encode(PacketType.WORK_STATUS, b"only-one"), MalformedPacket, "needs 3 arguments"),
        (encode(PacketType.CAN_DO, b"f" * (ARG_LIMIT + 1)), PacketTooLarge, "exceeds 8192"),
    ],
)
def test_both_ways_refuse_alike(data: bytes, exc: type[Exception], text: str) -> None:
    with pytest.raises(exc, match=text):
        dispatching(Owner()).feed(data)
    with pytest.raises(exc, match=text):
        Decoder().feed(data)


def test_admin_line_limit_counts_its_terminator() -> None:
    reader = dispatching(Owner(), max_line=10)
    reader.feed(b"x" * 10)  # fits, with its newline still to come
    with pytest.raises(AdminLineTooLong, match="longer than 10 bytes"):
        reader.feed(b"y")
    owner = Owner()
    dispatching(owner, max_line=10).feed(b"x" * 10 + b"\n")
    assert owner.seen == [AdminLine(b"x" * 10)]
    with pytest.raises(AdminLineTooLong):
        dispatching(Owner(), max_line=10).feed(b"x" * 11 + b"\n")


def test_every_error_packet_comes_from_the_one_table() -> None:
    from gearshift.server import scheduler

    constants = {v for k, v in vars(scheduler).items() if k.startswith("ERR_")}
    assert constants <= set(ERRORS.values())
    for name, packet in ERRORS.items():
        (decoded,) = Decoder(allow_admin=False).feed(packet)
        assert isinstance(decoded, Packet) and decoded.type == PacketType.ERROR
        assert decoded.args == ERROR_TEXTS[name] and not decoded.request


@pytest.mark.parametrize("size", [0, 10, 64 * 1024 - 1, 64 * 1024, 200_000])
def test_response_parts_join_to_the_encoded_packet(size: int) -> None:
    args = (b"H:x:1", b"d" * size)
    parts = response_parts(PacketType.WORK_COMPLETE, *args)
    assert b"".join(parts) == encode_response(PacketType.WORK_COMPLETE, *args)
    assert len(parts) == (1 if size < 64 * 1024 else 2)


def test_submit_layouts_match_the_packet_layouts() -> None:
    submits = {t for t in PacketType if t.name.startswith("SUBMIT_")}
    # Every submit type but SUBMIT_JOB_SCHED, which gearmand does not accept either.
    assert set(SUBMITS) == submits - {PacketType.SUBMIT_JOB_SCHED}
    for ptype, layout in SUBMITS.items():
        names = PACKET_ARGS[ptype]
        assert names[:2] == ("function", "unique")
        assert names[layout.data] == "data" and layout.data == len(names) - 1
        assert (names[layout.epoch] == "epoch") if layout.epoch else "epoch" not in names
        assert (names[layout.reducer] == "reducer") if layout.reducer else "reducer" not in names
        # An epoch job is a background job (gearmand runs it with nobody waiting).
        named_bg = "BG" in ptype.name or "BACKGROUND" in ptype.name or "EPOCH" in ptype.name
        assert layout.background == named_bg
        assert ptype.name.endswith(("HIGH", "HIGH_BG")) == (layout.priority == Priority.HIGH)
        assert ptype.name.endswith(("LOW", "LOW_BG")) == (layout.priority == Priority.LOW)
    assert len(SUBMIT_TYPES) == 6
    for (priority, background), ptype in SUBMIT_TYPES.items():
        assert SUBMITS[ptype][:2] == (priority, background)


def test_large_packets_in_pieces_come_out_whole_and_in_order() -> None:
    # Two 1 MiB packets fed in 64 KiB pieces, the second starting mid-piece: a large
    # packet completed in the buffer is taken from it with one copy of its payload,
    # and what follows it is read on as usual.
    payload = bytes(range(256)) * 4096
    stream = (
        encode_response(PacketType.WORK_COMPLETE, b"H:x:1", payload)
        + encode_response(PacketType.JOB_ASSIGN, b"H:x:2", b"f", payload[::-1])
        + encode_response(PacketType.NOOP)
    )
    d = Decoder(allow_admin=False)
    out = []
    for i in range(0, len(stream), 65536):
        out += d.feed(stream[i : i + 65536])
    assert [p.type for p in out] == [
        PacketType.WORK_COMPLETE,
        PacketType.JOB_ASSIGN,
        PacketType.NOOP,
    ]
    assert out[0].args == (b"H:x:1", payload)
    assert out[1].args == (b"H:x:2", b"f", payload[::-1])
    assert all(type(a) is bytes for p in out for a in p.args)
    assert d.buffered == 0
