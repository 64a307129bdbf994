"""``-S``: the three commands over TLS to gearshift's ``--ssl`` port (gearmand here has no TLS).

The commands run as subprocesses, as users run them.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.cli.conftest import Procs, gs, wait_for
from tests.ops.conftest import Certs, certs  # noqa: F401 - the session fixture
from tests.procs import ServerProcess


def test_submit_worker_admin_over_tls(
    make_gearshift: Callable[..., ServerProcess],
    certs: Certs,  # noqa: F811
    procs: Procs,
) -> None:
    srv = make_gearshift(*certs.server_flags())
    cert, key = certs.client("app")
    env = {
        "GEARMAND_CA_CERTIFICATE": str(certs.ca),
        "GEARMAN_CLIENT_PEM": str(cert),
        "GEARMAN_CLIENT_KEY": str(key),
    }
    port = str(srv.port)
    procs.gearshift(
        "worker", "-S", "-p", port, "--client-id", "tls-cli", "-f", "rev", "--", "rev", env=env
    )
    wait_for_tls_worker(port, env)
    r = gs("submit", "-S", "-p", port, "-f", "rev", "secret", env=env)
    assert (r.stdout, r.returncode) == (b"terces", 0), r.stderr
    r = gs("admin", "-S", "-p", port, "--workers", env=env)
    assert r.returncode == 0
    assert b"tls-cli : rev" in r.stdout
    # Plaintext to a TLS port fails; so does TLS with a CA that did not sign the server.
    assert gs("admin", "-p", port, "--getpid").returncode == 1
    rogue = {**env, "GEARMAND_CA_CERTIFICATE": str(certs.rogue_ca)}
    r = gs("admin", "-S", "-p", port, "--getpid", env=rogue)
    assert r.returncode == 1 and r.stderr.startswith(b"Error: ")


def wait_for_tls_worker(port: str, env: dict[str, str]) -> None:
    def registered() -> bool:
        r = gs("admin", "-S", "-p", port, "--status", "--json", env=env)
        return r.returncode == 0 and b'"rev"' in r.stdout and b'"workers": 1' in r.stdout

    wait_for(registered, 30, "TLS worker registered")
