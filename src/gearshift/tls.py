"""TLS contexts for the server's listeners and for clients, workers and admin tools.

The server side follows gearmand's flags (``--ssl --ssl-certificate --ssl-key
--ssl-ca-file``): with ``--ssl`` every connection on the port is TLS.  Unlike gearmand,
giving a CA file makes the server *require and verify* a client certificate signed by
that CA; the certificate's subject common name is then the peer's identity, which the
access rules (``gearshift.server.access``) use.

The client side takes ``tls=`` as ``True`` (system trust store), a CA file path, a
``TLSFiles`` (CA plus an optional client certificate and key) or a ready
``ssl.SSLContext``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from gearshift.errors import ConfigError

__all__ = ["TLSArg", "TLSFiles", "client_context", "peer_identity", "server_context"]


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """PEM files for a client: the CA that signed the server, and our own certificate.

    Args:
        ca: CA bundle that verifies the server; ``None`` = the system trust store.
        cert: client certificate (PEM), sent when the server asks for one.
        key: private key of ``cert``; ``None`` when ``cert`` contains it.
        check_hostname: verify that the server certificate names the host we dial.
    """

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    check_hostname: bool = True


TLSArg = ssl.SSLContext | TLSFiles | str | bool | None


def server_context(certificate: str, key: str | None, ca_file: str | None) -> ssl.SSLContext:
    """The listener's context; with ``ca_file`` a verified client certificate is required.

    Raises:
        ConfigError: a file is missing or does not hold what it should.
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(certificate, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS certificate {certificate} / key {key}: {exc}") from exc
    if ca_file:
        try:
            ctx.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load TLS CA file {ca_file}: {exc}") from exc
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_context(tls: TLSArg) -> ssl.SSLContext | None:
    """Turn a ``tls=`` argument into a client context (``None``/``False``: plaintext).

    Raises:
        ConfigError: a file is missing or unreadable.
    """
    if tls is None or tls is False:
        return None
    if isinstance(tls, ssl.SSLContext):
        return tls
    if tls is True:
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    files = TLSFiles(ca=tls) if isinstance(tls, str) else tls
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=files.ca)
        if files.cert:
            ctx.load_cert_chain(files.cert, files.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS files {files}: {exc}") from exc
    ctx.check_hostname = files.check_hostname
    return ctx


def peer_identity(peercert: dict[str, Any] | None) -> str | None:
    """The subject common name of a verified peer certificate (``getpeercert()``)."""
    if not peercert:
        return None
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None
