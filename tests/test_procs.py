"""tests/procs.py: the server processes every suite starts must be the ones it talks to."""

from __future__ import annotations

import socket

import pytest

from tests.procs import Gearmand, Gearshift, ServerProcess, _listens_on, free_port


def test_free_port_never_hands_out_a_port_twice() -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)


@pytest.mark.parametrize("cls", [Gearshift, Gearmand], ids=["gearshift", "gearmand"])
def test_a_server_given_a_taken_port_moves_instead_of_borrowing_it(
    cls: type[ServerProcess],
) -> None:
    # Another process listens on the port first. A connect to it succeeds, but it is not
    # our server: start() must notice (the listener is not ours) and take another port,
    # or the test would talk to a stranger (seen in CI: another conversation's server).
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        srv = cls()
        srv.port = taken
        try:
            srv.start()
            assert srv.port != taken
            assert srv.proc is not None and _listens_on(srv.proc.pid, srv.port)
        finally:
            srv.close()
