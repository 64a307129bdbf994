"""Row helpers every store uses: identifiers, TEXT-or-BLOB names, and forgiving reads.

A row another program wrote (gearmand, an operator with a SQL shell) must replay, not
stop the server: these pin what each odd value reads as.
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest

import gearshift.store
from gearshift.errors import ConfigError
from gearshift.protocol.packets import Priority
from gearshift.records import StoredJob
from gearshift.store.rows import (
    as_bytes,
    as_priority,
    as_when,
    check_identifier,
    job_from_row,
    text_or_blob,
)

STORE = Path(gearshift.store.__file__).parent


@pytest.mark.parametrize("name", ["gearman_queue", "_q", "Q1", "a" * 63])
def test_plain_identifiers_pass(name: str) -> None:
    assert check_identifier(name) == name


@pytest.mark.parametrize(
    "name", ["", "1q", "q-1", "q;drop table x", 'q"', "q x", "a" * 64, "é", "q\n"]
)
def test_anything_else_is_refused_with_what_it_names(name: str) -> None:
    with pytest.raises(ConfigError, match="invalid prefix name"):
        check_identifier(name, "prefix")


def test_names_are_text_when_they_are_utf8_else_blob() -> None:
    assert text_or_blob(b"reverse") == "reverse"
    assert text_or_blob("café".encode()) == "café"
    assert text_or_blob(b"\xff\xfe") == b"\xff\xfe"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, b""),
        (b"x\x00y", b"x\x00y"),
        (bytearray(b"ab"), b"ab"),
        (memoryview(b"cd"), b"cd"),
        ("é", "é".encode()),
        (12, b"12"),
    ],
)
def test_as_bytes(value: object, expected: bytes) -> None:
    assert as_bytes(value) == expected
    assert type(as_bytes(value)) is bytes


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, Priority.HIGH), (1, Priority.NORMAL), ("2", Priority.LOW), (b"0", Priority.HIGH)],
)
def test_as_priority(value: object, expected: Priority) -> None:
    assert as_priority(value) is expected


@pytest.mark.parametrize("value", [None, 7, -1, "high", b"", 1.5j])
def test_unknown_priority_replays_as_normal_and_says_so(
    value: object, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gearshift.store.rows"):
        assert as_priority(value) is Priority.NORMAL
    assert "replayed as NORMAL" in caplog.text


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, 0), ("garbage", 0), (-5, 0), (0, 0), (1_700_000_000, 1_700_000_000), ("42", 42)],
)
def test_as_when_reads_null_garbage_and_the_past_as_now(value: object, expected: int) -> None:
    assert as_when(value) == expected


def test_job_from_row_takes_the_first_six_columns() -> None:
    row = (7, "u", memoryview(b"fn"), "2", b"data", None, "ignored")
    job = job_from_row(row)
    assert job == StoredJob(function=b"fn", unique=b"u", data=b"data", priority=Priority.LOW)
    assert job.key == 7


@pytest.mark.parametrize("backend", ["postgres", "mysql", "redis"])
def test_no_store_imports_another_backend(backend: str) -> None:
    # Opening a PostgreSQL, MySQL or Redis store must not depend on the SQLite one:
    # shared helpers live in store/rows.py.
    tree = ast.parse((STORE / f"{backend}.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    others = {f"gearshift.store.{b}" for b in ("sqlite", "postgres", "mysql", "redis")}
    assert imported & (others - {f"gearshift.store.{backend}"}) == set()
