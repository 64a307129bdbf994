"""The pure admin text helpers."""

from __future__ import annotations

import pytest

from gearshift.protocol import admin


def test_split_command_whitespace_and_limit() -> None:
    assert admin.split_command(b"show   unique jobs ") == [b"show", b"unique", b"jobs"]
    assert admin.split_command(b"") == []
    assert admin.split_command(b" ") == [b""]  # a leading space: empty first token
    assert admin.split_command(b" status") == [b"", b"status"]
    assert admin.split_command(b"status\tx") == [b"status\tx"]  # TAB is not a separator
    assert admin.split_command(b"status  ") == [b"status"]
    assert admin.split_command(b"a b c d e") == [b"a", b"b", b"c", b"d", b"e"]
    with pytest.raises(admin.TooManyTokens):
        admin.split_command(b"a b c d e f")


def test_error_strings_are_gearmands() -> None:
    assert admin.unknown_command(b"foo") == b"ERR UNKNOWN_COMMAND Unknown+server+commandfoo\r\n"
    assert admin.invalid_arguments(b"maxqueue") == (
        b"ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+"
        b"maxqueue\r\n"
    )
    assert admin.ok_value(b"1.2") == b"OK 1.2\n"


def test_renderers_and_parse_list_roundtrip() -> None:
    status = admin.render_status([(b"f", 3, 1, 2), (b"g", 0, 0, 0)])
    assert status == b"f\t3\t1\t2\ng\t0\t0\t0\n.\n"
    assert admin.parse_list(status) == [[b"f", b"3", b"1", b"2"], [b"g", b"0", b"0", b"0"]]
    assert admin.render_priority_status([(b"p", 1, 2, 3, 4)]) == b"p\t1\t2\t3\t4\n.\n"
    workers = admin.render_workers([(7, b"127.0.0.1", b"-", [b"b", b"a"]), (8, b"::1", b"id", [])])
    assert workers == b"7 127.0.0.1 - : b a\n8 ::1 id :\n.\n"
    assert admin.render_rows([]) == b".\n"
