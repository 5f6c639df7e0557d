"""Connector credentials: from configuration or the environment, never in a message.

A :class:`Secret` prints as ``***``; :func:`scrub` removes every secret a connector holds
from text that came from elsewhere (a driver's error, a server's reply), so neither a
step's recorded error nor a log line nor an audit record can carry one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from ..errors import ConnectorConfigError


class Secret:
    """A credential's value, hidden from ``repr``/``str``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ConnectorConfigError("a connector secret must be a non-empty string")
        self._value = value

    @classmethod
    def from_env(cls, name: str) -> Secret:
        """The value of environment variable ``name``; its absence is a clear error naming
        the variable (never a value)."""
        value = os.environ.get(name)
        if not value:
            raise ConnectorConfigError(f"environment variable {name} is not set")
        return cls(value)

    def reveal(self) -> str:
        """The value, for the one place that sends it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def resolve(value: Secret | str | None, env: str | None) -> Secret | None:
    """A secret given directly, or read from ``env``; None when neither is given."""
    if value is not None and env is not None:
        raise ConnectorConfigError("give a connector's secret or the variable holding it, not both")
    if isinstance(value, Secret):
        return value
    if value is not None:
        return Secret(value)
    if env is not None:
        return Secret.from_env(env)
    return None


def scrub(text: str, secrets: Iterable[Secret | str | None]) -> str:
    """``text`` with every secret's value replaced by ``***``."""
    for secret in secrets:
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if value:
            text = text.replace(value, "***")
    return text
