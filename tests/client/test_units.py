"""Server lists, codecs, the portal and job handles: the parts that need no server."""

from __future__ import annotations

import asyncio
import threading

import pytest

from gearshift import JobHandle, ServerAddress, parse_servers
from gearshift._sync.portal import Portal
from gearshift.codecs import (
    BytesCodec,
    JsonCodec,
    PickleCodec,
    TextCodec,
    describe_exception,
    get_codec,
)
from gearshift.errors import ClosedError


def test_server_address_forms() -> None:
    assert ServerAddress.parse("h") == ServerAddress("h", 4730)
    assert ServerAddress.parse(" h:1234 ") == ServerAddress("h", 1234)
    assert ServerAddress.parse("[::1]:99") == ServerAddress("::1", 99)
    assert ServerAddress.parse("[::1]") == ServerAddress("::1", 4730)
    assert ServerAddress.parse("::1") == ServerAddress("::1", 4730)
    assert str(ServerAddress("::1", 99)) == "[::1]:99"
    assert str(ServerAddress("h", 1)) == "h:1"
    for bad in ("", ":80", "h:0", "h:65536", "h:x"):
        with pytest.raises(ValueError):
            ServerAddress.parse(bad)


def test_server_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_servers("a:1,b:2, a:1") == [ServerAddress("a", 1), ServerAddress("b", 2)]
    assert parse_servers(["a:1", ("b", 2), ServerAddress("c")]) == [
        ServerAddress("a", 1),
        ServerAddress("b", 2),
        ServerAddress("c"),
    ]
    assert parse_servers(("h", 5)) == [ServerAddress("h", 5)]
    monkeypatch.setenv("GEARMAN_SERVERS", "e1:10,e2")
    assert parse_servers(None) == [ServerAddress("e1", 10), ServerAddress("e2")]
    assert parse_servers([]) == [ServerAddress("e1", 10), ServerAddress("e2")]
    monkeypatch.delenv("GEARMAN_SERVERS")
    assert parse_servers(None) == [ServerAddress("127.0.0.1", 4730)]
    with pytest.raises(ValueError):
        parse_servers(",")


def test_codecs() -> None:
    b = BytesCodec()
    assert b.encode(b"x") == b"x" and b.encode("é") == "é".encode()
    assert b.encode(bytearray(b"y")) == b"y" and b.encode(memoryview(b"z")) == b"z"
    assert b.encode(None) == b"" and b.decode(b"raw") == b"raw"
    with pytest.raises(TypeError):
        b.encode(3)
    assert TextCodec().decode("é".encode()) == "é"
    assert TextCodec().decode(b"\xff") == "\ufffd"
    j = JsonCodec()
    assert j.decode(j.encode({"a": [1, 2]})) == {"a": [1, 2]}
    assert j.encode({"a": 1}) == b'{"a":1}' and j.decode(b"") is None
    p = PickleCodec()
    assert p.decode(p.encode({1, 2})) == {1, 2}
    assert isinstance(get_codec(None), BytesCodec)
    assert isinstance(get_codec("json"), JsonCodec)
    assert get_codec(j) is j
    with pytest.raises(ValueError):
        get_codec("yaml")
    with pytest.raises(TypeError):
        get_codec(object())  # type: ignore[arg-type]


def test_exception_payloads() -> None:
    assert describe_exception(ValueError("v"), BytesCodec()) == b"ValueError: v"
    assert describe_exception(ClosedError("c"), TextCodec()) == b"gearshift.errors.ClosedError: c"
    assert JsonCodec().decode(describe_exception(KeyError("k"), JsonCodec())) == {
        "type": "KeyError",
        "message": "'k'",
    }

    # A codec that cannot encode the dict still yields readable text.
    assert describe_exception(ValueError("v"), _Only()) == b"ValueError: v"


class _Only:
    def encode(self, value: object) -> bytes:
        raise TypeError("cannot")

    def decode(self, data: bytes) -> bytes:
        return data


def test_job_handle_is_a_str_with_a_server() -> None:
    handle = JobHandle("H:x:1", ServerAddress("h", 1))
    assert handle == "H:x:1" and isinstance(handle, str)
    assert handle.server == ServerAddress("h", 1)
    assert JobHandle("H:x:2").server is None


def test_portal_runs_coroutines_and_plain_calls() -> None:
    portal = Portal("test-portal")
    try:

        async def where() -> str:
            await asyncio.sleep(0)
            return threading.current_thread().name

        assert portal.call(where) == "test-portal"
        assert portal.call_sync(lambda: threading.current_thread().name) == "test-portal"
        assert portal.submit(where).result(5) == "test-portal"

        async def boom() -> None:
            raise KeyError("x")

        with pytest.raises(KeyError):
            portal.call(boom)
        with pytest.raises(ZeroDivisionError):
            portal.call_sync(lambda: 1 / 0)

        async def nested() -> None:
            portal.call(where)  # would deadlock: refused

        with pytest.raises(RuntimeError):
            portal.call(nested)
    finally:
        portal.close()
    assert portal.closed
    portal.close()  # idempotent
    with pytest.raises(ClosedError):
        portal.call_sync(lambda: None)
