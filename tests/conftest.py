"""Shared fixtures (real gearmand and gearshift servers on free ports) and the fast tier.

``pytest --fast`` (``make test-fast``) collects only the files listed in
``tests/fast_tier.py`` and runs them under ``tests/guard.py``: a test that starts a
process or connects to PostgreSQL, MariaDB or Redis fails, even if the code under
test caught the guard's exception.
"""

from __future__ import annotations

import resource
from collections.abc import Callable, Iterator

import pytest

from tests.fast_tier import FAST_FILES
from tests.guard import FastTier
from tests.procs import Gearmand, Gearshift, ServerProcess

# 10,000-connection tests and 1,000 idle workers need file descriptors.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _soft != resource.RLIM_INFINITY and _soft < 20000:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(20000, _hard), _hard))

ServerFactory = Callable[..., ServerProcess]


def _factory(cls: type[ServerProcess]) -> Iterator[ServerFactory]:
    made: list[ServerProcess] = []

    def make(*extra_args: str, port: int | None = None) -> ServerProcess:
        srv = cls(extra_args, port=port).start()
        made.append(srv)
        return srv

    yield make
    for srv in made:
        srv.close()


@pytest.fixture
def make_gearmand() -> Iterator[ServerFactory]:
    """Start C++ gearmand processes: ``make_gearmand("--job-retries", "2")``."""
    yield from _factory(Gearmand)


@pytest.fixture
def make_gearshift() -> Iterator[ServerFactory]:
    """Start gearshift server processes with gearmand-style flags."""
    yield from _factory(Gearshift)


@pytest.fixture(params=["gearshift", "gearmand"])
def make_any_server(request: pytest.FixtureRequest) -> Iterator[ServerFactory]:
    """Parametrizes a test over both servers."""
    cls = Gearshift if request.param == "gearshift" else Gearmand
    yield from _factory(cls)


# --- the fast tier -------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fast",
        action="store_true",
        help="run only the fast tier (tests/fast_tier.py), failing any test that starts "
        "a process or connects to a database",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--fast", default=False):
        config.pluginmanager.register(FastTier(config.rootpath, FAST_FILES), "fast-tier")
