"""Row helpers shared by the SQL and Redis stores: identifiers, names, and reading rows back.

Every backend stores the same five fields (gearmand's ``unique_key``,
``function_name``, ``priority``, ``data``, ``when_to_run``), and every backend hands
them back in its own types: TEXT or BLOB, ``memoryview``, Redis ``bytes``, a NULL where
an old gearmand wrote nothing.  Reading them back is the same work everywhere, and a
row written by another program must not stop a replay.  So the forgiving conversions
live here, where every store can import them without depending on another store.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from gearshift.errors import ConfigError
from gearshift.protocol.packets import Priority
from gearshift.records import StoredJob

__all__ = [
    "as_bytes",
    "as_priority",
    "as_when",
    "check_identifier",
    "job_from_row",
    "text_or_blob",
]

logger = logging.getLogger(__name__)

#: fullmatch, not match with ``$``: ``$`` also matches before a final newline.
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def check_identifier(name: str, what: str = "table") -> str:
    """Return ``name`` if it is a plain SQL identifier (no quoting games), else ConfigError."""
    if not _IDENT.fullmatch(name):
        raise ConfigError(f"invalid {what} name {name!r}: use letters, digits and _")
    return name


def text_or_blob(value: bytes) -> str | bytes:
    """UTF-8 names are stored as TEXT (what gearmand writes and expects); others as BLOB."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value


def as_bytes(value: object) -> bytes:
    """A column value read back from any backend, as bytes."""
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return str(value).encode("utf-8")


def as_priority(value: object) -> Priority:
    """A stored priority; anything unexpected reads as NORMAL instead of aborting replay."""
    try:
        return Priority(_as_int(value))
    except (TypeError, ValueError):
        logger.warning("stored job with unknown priority %r replayed as NORMAL", value)
        return Priority.NORMAL


def as_when(value: object) -> int:
    """A stored epoch time; NULL and garbage read as 0 (run now)."""
    try:
        return max(0, _as_int(value))
    except (TypeError, ValueError):
        return 0


def job_from_row(row: Sequence[Any]) -> StoredJob:
    """A stored job from a ``(key, unique, function, priority, data, when)`` row."""
    key, unique, function, priority, data, when = tuple(row)[:6]
    return StoredJob(
        function=as_bytes(function),
        unique=as_bytes(unique),
        data=as_bytes(data),
        priority=as_priority(priority),
        when=as_when(when),
        key=key,
    )


def _as_int(value: object) -> int:
    if isinstance(value, (int, str, bytes, float)):
        return int(value)
    raise TypeError(f"not a number: {value!r}")
