"""What importing a part of gearshift loads, checked in a fresh interpreter.

A module that is already loaded in the test process says nothing about what an import
pulls in, so each check starts its own interpreter.  That makes these tests start
processes: they belong to the full suite, not to the fast tier.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: The client library, and the optional backends and HTTP stack.
CLIENT_LIBRARY = [
    "gearshift._async.client",
    "gearshift._async.worker",
    "gearshift._async.admin",
    "gearshift._sync.client",
    "gearshift._sync.worker",
]
HEAVY = ["aiohttp", "asyncpg", "redis", "asyncmy", "prometheus_client"]


def loaded_after(statement: str, candidates: list[str]) -> list[str]:
    """The ``candidates`` in ``sys.modules`` after ``statement``, in a fresh interpreter."""
    found = f"[m for m in {candidates!r} if m in sys.modules]"
    code = f"import json, sys\n{statement}\nprint(json.dumps({found}))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded: list[str] = json.loads(out.stdout)
    return loaded


@pytest.mark.parametrize(
    "module", ["gearshift.server.server", "gearshift.cli.server", "gearshift.protocol"]
)
def test_server_and_protocol_do_not_load_the_client_library(module: str) -> None:
    # Starting the server, or using the sans-IO codec, must not pay for the client,
    # worker and admin libraries, nor for a backend or the HTTP stack nobody asked for.
    assert loaded_after(f"import {module}", CLIENT_LIBRARY + HEAVY) == []


def test_store_package_loads_no_backend_driver() -> None:
    # Each network store imports its driver when it is opened, not when gearshift.store is.
    assert loaded_after("import gearshift.store", HEAVY) == []


def test_core_import_stays_light() -> None:
    # `import gearshift` loads nothing but the version; `from gearshift import Client`
    # pulls in the client library, never the optional backends, the HTTP stack or
    # multiprocessing: each is imported where it is used.
    assert loaded_after("import gearshift", CLIENT_LIBRARY + HEAVY) == []
    statement = "from gearshift import AdminClient, AsyncWorker, Client, Worker"
    assert loaded_after(statement, HEAVY + ["multiprocessing"]) == []
    assert loaded_after(statement, CLIENT_LIBRARY) == CLIENT_LIBRARY
