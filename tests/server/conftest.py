from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gearshift.testing import RunningServer, serve


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    async with serve() as srv:
        yield srv
