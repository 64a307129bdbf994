"""The TOML configuration file (``gearshift server --config FILE``).

Top-level keys are gearmand's long options, spelled with dashes or underscores; a
``true`` switch is given, ``false`` left out.  Two tables add what gearmand lacks::

    port = 4730
    listen = "0.0.0.0"
    queue-type = "libsqlite3"
    libsqlite3-db = "/var/lib/gearshift/queue.db"
    job-retries = 3
    verbose = "INFO"
    ssl = true
    ssl-certificate = "/etc/gearshift/server.pem"
    ssl-key = "/etc/gearshift/server.key"
    ssl-ca-file = "/etc/gearshift/ca.pem"

    [http]
    port = 8080                 # enables the HTTP listener
    listen = "127.0.0.1"

    [access]                    # see gearshift.server.access
    admin = ["ops"]

The file's options go in front of the command line's, so flags override the file.
"""

from __future__ import annotations

import argparse
import tomllib
from typing import Any

from gearshift.errors import ConfigError
from gearshift.server.access import AccessPolicy

__all__ = ["load_toml"]

#: [http] keys -> the flag they stand for.
_HTTP_KEYS = {"port": "--http-port", "listen": "--http-listen"}


def _words(flag: str, value: Any, where: str) -> list[str]:
    if isinstance(value, bool):
        return [flag] if value else []
    if isinstance(value, int | float | str):
        return [f"{flag}={value}"]
    raise ConfigError(f"{where}: expected a string, number or boolean, not {value!r}")


def load_toml(path: str, parser: argparse.ArgumentParser) -> tuple[list[str], AccessPolicy | None]:
    """Read ``path``; return the equivalent command-line words and the access policy.

    Raises:
        ConfigError: unreadable file, TOML syntax error, unknown option.
    """
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    known = {s for action in parser._actions for s in action.option_strings if s.startswith("--")}
    words: list[str] = []
    access: AccessPolicy | None = None
    for key, value in doc.items():
        if key == "access":
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: [access] must be a table")
            access = AccessPolicy.from_toml(value)
            continue
        if key == "http":
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: [http] must be a table")
            for hkey, hvalue in value.items():
                if hkey not in _HTTP_KEYS:
                    raise ConfigError(f"{path}: [http] unknown key {hkey!r}")
                words += _words(_HTTP_KEYS[hkey], hvalue, f"{path}: http.{hkey}")
            continue
        flag = "--" + key.replace("_", "-")
        if flag not in known or flag in ("--config", "--help", "--version", "--check-args"):
            raise ConfigError(f"{path}: unknown option {key!r}")
        words += _words(flag, value, f"{path}: {key}")
    return words, access
