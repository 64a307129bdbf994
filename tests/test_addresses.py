"""Server addresses and loopback peers (pure)."""

from __future__ import annotations

import pytest

from gearshift.addresses import ServerAddress, is_loopback, parse_servers


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # IPv4-mapped, as a dual-stack listener reports it
        ("fe80::1%eth0", False),
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("localhost", False),  # a name is not an address
        ("", False),
        ("-", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_parse_servers_forms() -> None:
    assert parse_servers("h1:4731, h2 ,[::1]:4732,h1:4731") == [
        ServerAddress("h1", 4731),
        ServerAddress("h2"),
        ServerAddress("::1", 4732),
    ]
    assert str(ServerAddress("::1", 4732)) == "[::1]:4732"
    with pytest.raises(ValueError):
        parse_servers("h:0")
