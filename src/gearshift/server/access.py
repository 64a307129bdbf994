"""Access rules: who may change server state, register for a function, or submit to it.

Off by default, so that gearshift stays a drop-in gearmand.  Turned on by the
``[access]`` table of the TOML configuration file::

    [access]
    enabled = true
    admin = ["ops", "deploy-bot"]        # identities allowed state-changing admin
    admin_from_loopback = true           # loopback peers are trusted for admin too

    [access.functions."resize-*"]        # fnmatch pattern on the function name
    register = ["image-worker"]          # who may CAN_DO / CAN_DO_TIMEOUT
    submit = ["web", "*"]                # "*" = anyone, with or without a certificate

    [access.default]                     # functions that match no pattern
    register = ["*"]
    submit = ["*"]

An identity is the subject common name of a verified TLS client certificate (see
``gearshift.tls``); a peer without one has no identity and matches only ``"*"``.
State-changing admin commands are ``shutdown``, ``cancel job``, ``drop function``,
``maxqueue`` and ``create function``; read-only ones stay open to everyone.

Decisions for (function, identity) pairs are cached, so a check on the submit path
costs one dict lookup.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from gearshift.addresses import is_loopback
from gearshift.errors import ConfigError
from gearshift.server.throttle import LogThrottle

if TYPE_CHECKING:
    from gearshift.server.model import Peer

__all__ = ["PROTECTED_ADMIN", "AccessPolicy", "FunctionRule", "PeerGate", "is_loopback"]

logger = logging.getLogger(__name__)

#: Admin commands (first token, lower case) that change server state.
PROTECTED_ADMIN: Final = frozenset({b"shutdown", b"cancel", b"drop", b"maxqueue", b"create"})
#: Matches every peer, with or without an identity.
ANYONE: Final = "*"


def _names(value: Any, where: str) -> frozenset[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of identity names")
    return frozenset(value)


@dataclass(frozen=True)
class FunctionRule:
    """Who may register for and submit to the functions a pattern matches."""

    pattern: str
    register: frozenset[str] = frozenset({ANYONE})
    submit: frozenset[str] = frozenset({ANYONE})

    @classmethod
    def from_table(cls, pattern: str, table: Mapping[str, Any]) -> FunctionRule:
        unknown = set(table) - {"register", "submit"}
        if unknown:
            raise ConfigError(f"access rule {pattern!r}: unknown keys {sorted(unknown)}")
        where = f"access.functions.{pattern!r}"
        return cls(
            pattern,
            _names(table.get("register", [ANYONE]), where + ".register"),
            _names(table.get("submit", [ANYONE]), where + ".submit"),
        )


def _allows(names: frozenset[str], identity: str | None) -> bool:
    return ANYONE in names or (identity is not None and identity in names)


@dataclass
class AccessPolicy:
    """The server's access rules.  ``AccessPolicy()`` allows everything (gearmand's way).

    Args:
        enabled: apply the rules; when False only gearmand's own limit applies
            (``shutdown`` from loopback).
        admin: identities allowed to run state-changing admin commands.
        admin_from_loopback: loopback peers may run them without an identity.
        functions: per-function rules, first matching pattern wins.
        default: the rule for functions no pattern matches.
        http_token: a bearer token that authorises the HTTP API's state changes.
    """

    enabled: bool = False
    admin: frozenset[str] = frozenset()
    admin_from_loopback: bool = True
    functions: tuple[FunctionRule, ...] = ()
    default: FunctionRule = field(default_factory=lambda: FunctionRule("*"))
    http_token: str | None = None
    _cache: dict[tuple[bytes, str | None, bool], bool] = field(
        default_factory=dict, repr=False, compare=False
    )

    @classmethod
    def from_toml(cls, table: Mapping[str, Any]) -> AccessPolicy:
        """Build the policy from the ``[access]`` table of the configuration file.

        Raises:
            ConfigError: unknown keys or values of the wrong type.
        """
        known = {"enabled", "admin", "admin_from_loopback", "functions", "default", "http_token"}
        unknown = set(table) - known
        if unknown:
            raise ConfigError(f"[access]: unknown keys {sorted(unknown)}")
        enabled = table.get("enabled", True)
        loopback = table.get("admin_from_loopback", True)
        token = table.get("http_token")
        if not isinstance(enabled, bool) or not isinstance(loopback, bool):
            raise ConfigError("[access]: enabled and admin_from_loopback are true or false")
        if token is not None and (not isinstance(token, str) or not token):
            raise ConfigError("[access]: http_token must be a non-empty string")
        functions = table.get("functions", {})
        default = table.get("default", {})
        if not isinstance(functions, dict) or not isinstance(default, dict):
            raise ConfigError("[access]: functions and default are tables")
        rules = []
        for pattern, rule in functions.items():
            if not isinstance(rule, dict):
                raise ConfigError(f"[access.functions.{pattern!r}] must be a table")
            rules.append(FunctionRule.from_table(pattern, rule))
        return cls(
            enabled=enabled,
            admin=_names(table.get("admin", []), "access.admin"),
            admin_from_loopback=loopback,
            functions=tuple(rules),
            default=FunctionRule.from_table("*", default),
            http_token=token,
        )

    @property
    def has_function_rules(self) -> bool:
        """Whether CAN_DO and submits need checking at all."""
        if not self.enabled:
            return False
        rules: Iterable[FunctionRule] = (*self.functions, self.default)
        return any(r.register != {ANYONE} or r.submit != {ANYONE} for r in rules)

    def rule_for(self, function: bytes) -> FunctionRule:
        """The first rule whose pattern matches ``function`` (or the default)."""
        name = function.decode("utf-8", "replace")
        for rule in self.functions:
            if fnmatch.fnmatchcase(name, rule.pattern):
                return rule
        return self.default

    def may_admin(self, host: str, identity: str | None) -> bool:
        """May a peer at ``host`` with ``identity`` run state-changing admin commands?"""
        if not self.enabled:
            return True
        if self.admin_from_loopback and is_loopback(host):
            return True
        return identity is not None and identity in self.admin

    def may_register(self, function: bytes, identity: str | None) -> bool:
        """May ``identity`` register as a worker for ``function`` (CAN_DO)?"""
        return self._decide(function, identity, True)

    def may_submit(self, function: bytes, identity: str | None) -> bool:
        """May ``identity`` submit jobs to ``function``?"""
        return self._decide(function, identity, False)

    def _decide(self, function: bytes, identity: str | None, register: bool) -> bool:
        if not self.enabled:
            return True
        key = (function, identity, register)
        cache = self._cache
        answer = cache.get(key)
        if answer is None:
            rule = self.rule_for(function)
            answer = _allows(rule.register if register else rule.submit, identity)
            if len(cache) > 65536:
                # Many distinct function names: keep memory bounded.
                cache.clear()
            cache[key] = answer
        return answer


class PeerGate:
    """The scheduler's ``Gate``: applies an AccessPolicy to a peer's TLS identity.

    Refusals are logged at most once per ``log_interval`` seconds; the next line says
    how many were left out, so a client that retries in a loop cannot flood the log.
    """

    __slots__ = ("policy", "_log")

    def __init__(self, policy: AccessPolicy, log_interval: float = 10.0) -> None:
        self.policy = policy
        self._log = LogThrottle(log_interval)

    @property
    def log_interval(self) -> float:
        return self._log.interval

    @log_interval.setter
    def log_interval(self, seconds: float) -> None:
        self._log.interval = seconds

    def may_register(self, peer: Peer, function: bytes) -> bool:
        allowed = self.policy.may_register(function, peer.identity)
        if not allowed:
            self._refused("CAN_DO", function, peer)
        return allowed

    def may_submit(self, peer: Peer, function: bytes) -> bool:
        allowed = self.policy.may_submit(function, peer.identity)
        if not allowed:
            self._refused("submit to", function, peer)
        return allowed

    def _refused(self, what: str, function: bytes, peer: Peer) -> None:
        unlogged = self._log.ready()
        if unlogged is None:
            return
        logger.warning(
            "refused %s %r from %s (identity %s)%s",
            what,
            function,
            peer.host,
            peer.identity,
            f"; {unlogged} more refusals since the last such line" if unlogged else "",
        )
