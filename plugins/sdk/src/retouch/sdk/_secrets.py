"""Secrets that cannot leak by accident through str, repr, format or logging."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

REDACTED = "***"


class Secret:
    """A secret string, such as an API key. ``str``, ``repr`` and ``format`` show
    ``***``; only :meth:`reveal` gives the value, at the one place that sends it.

    The server resolves ``api_key_env = "VAR"`` from a provider's config table and
    passes ``api_key`` as a :class:`Secret`; :mod:`retouch.sdk.http` removes every
    secret it was given from its error messages, log lines and span attributes.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"a Secret wraps a str, not {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        """The secret value itself."""
        return self._value

    def __str__(self) -> str:
        return REDACTED

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    def __format__(self, spec: str) -> str:
        return REDACTED

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> str:
        raise TypeError("a Secret cannot be pickled")


class Redactor:
    """Replaces known secret values in text with ``***``."""

    def __init__(self, secrets: Iterable[Secret] = ()) -> None:
        self._values: set[str] = set()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: Secret | str) -> None:
        """Redact ``secret`` from now on (a plain str is treated as a secret value)."""
        value = secret.reveal() if isinstance(secret, Secret) else secret
        # A header secret such as "Bearer <token>" also leaks as the bare token (an
        # API echoing it back), so each word of it is redacted too. Very short values
        # would redact ordinary words; nobody's key is that short.
        for candidate in (value, *value.split()):
            if len(candidate) >= 8:
                self._values.add(candidate)

    def __call__(self, text: str) -> str:
        """``text`` with every known secret replaced by ``***``."""
        for value in sorted(self._values, key=len, reverse=True):
            if value in text:
                text = text.replace(value, REDACTED)
        return text
