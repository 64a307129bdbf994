"""The admin (text) protocol: tokenizing commands and gearmand's exact reply strings.

gearmand splits a command line on runs of spaces, accepts at most five tokens (a
sixth closes the connection) and matches command names case-insensitively.  List
replies end each row with ``\\n`` and finish with ``.\\n``; ``OK``/``ERR`` replies end
with ``\\r\\n`` except ``version``, ``verbose`` and ``getpid`` (``\\n``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

MAX_TOKENS: Final = 5

OK: Final = b"OK\r\n"
ERR_UNKNOWN_ERROR: Final = b"ERR UNKNOWN_ERROR\r\n"
ERR_UNKNOWN_JOB: Final = b"ERR UNKNOWN_JOB\r\n"
ERR_UNKNOWN_SHOW_ARGUMENTS: Final = b"ERR UNKNOWN_SHOW_ARGUMENTS\r\n"
ERR_FUNCTION_NOT_FOUND: Final = b"ERR function not found\r\n"
ERR_FUNCTION_BUSY: Final = b"ERR there are still connected workers or executing clients\r\n"


class TooManyTokens(ValueError):
    """More than five tokens: gearmand closes the connection."""


def split_command(line: bytes) -> list[bytes]:
    """Split an admin line (terminator already stripped) into at most five tokens.

    Raises:
        TooManyTokens: the line has more than ``MAX_TOKENS`` tokens.
    """
    # gearmand splits on the space character only (a TAB is part of a token); runs of
    # spaces collapse and trailing ones vanish, but a leading space makes an empty
    # first token, so " status" is an unknown command.
    parts = line.split(b" ")
    tokens = [t for t in parts if t]
    if len(parts) > 1 and not parts[0]:
        tokens.insert(0, b"")
    if len(tokens) > MAX_TOKENS:
        raise TooManyTokens(f"{len(tokens)} tokens, at most {MAX_TOKENS}")
    return tokens


def unknown_command(command: bytes) -> bytes:
    """``ERR UNKNOWN_COMMAND Unknown+server+command<cmd>`` (no separator, as gearmand)."""
    return b"ERR UNKNOWN_COMMAND Unknown+server+command" + command + b"\r\n"


def invalid_arguments(command: bytes) -> bytes:
    """``ERR INVALID_ARGUMENTS An+incomplete+set+...+<cmd>``."""
    return (
        b"ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+"
        + command
        + b"\r\n"
    )


def create_function_error(name: bytes) -> bytes:
    return b"ERR CREATE_FUNCTION " + name + b"\r\n"


def ok_value(value: bytes) -> bytes:
    """``OK <value>\\n`` as ``version``, ``verbose`` and ``getpid`` answer."""
    return b"OK " + value + b"\n"


def render_rows(rows: Iterable[Iterable[bytes]], sep: bytes = b"\t") -> bytes:
    """A list reply: one ``sep``-joined row per line, then ``.\\n``."""
    parts = [sep.join(row) + b"\n" for row in rows]
    parts.append(b".\n")
    return b"".join(parts)


def render_status(rows: Iterable[tuple[bytes, int, int, int]]) -> bytes:
    """``status``: FUNCTION, TOTAL, RUNNING, WORKERS."""
    return render_rows(
        (name, str(total).encode(), str(running).encode(), str(workers).encode())
        for name, total, running, workers in rows
    )


def render_priority_status(rows: Iterable[tuple[bytes, int, int, int, int]]) -> bytes:
    """``prioritystatus``: FUNCTION, HIGH, NORMAL, LOW, WORKERS."""
    return render_rows(
        (name, str(high).encode(), str(normal).encode(), str(low).encode(), str(workers).encode())
        for name, high, normal, low, workers in rows
    )


def render_workers(rows: Iterable[tuple[int, bytes, bytes, Iterable[bytes]]]) -> bytes:
    """``workers``: ``FD IP CLIENT-ID : f1 f2`` per connection."""
    lines = []
    for fd, host, client_id, functions in rows:
        head = b"%d %s %s :" % (fd, host, client_id)
        lines.append(head + b"".join(b" " + f for f in functions) + b"\n")
    lines.append(b".\n")
    return b"".join(lines)


def parse_list(reply: bytes) -> list[list[bytes]]:
    """Split a list reply (``status``, ``show jobs``...) into rows of tab-separated fields."""
    rows = []
    for line in reply.split(b"\n"):
        line = line.rstrip(b"\r")
        if line == b".":
            break
        rows.append(line.split(b"\t"))
    return rows
