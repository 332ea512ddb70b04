"""Reading a provider's config table: typed values, defaults, and errors that name the
provider and the key."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal, TypeVar, overload

from ._secrets import Secret

N = TypeVar("N", int, float)


class ProviderNotConfigured(ValueError):
    """Raised by ``start`` when a provider that needs configuration (a hosted API's
    URL or key) got none: the server leaves it out quietly, as off, rather than as
    broken, so installing a plugin never makes a server start with errors."""


class ConfigReader:
    """Typed access to the config mapping a provider's ``start`` receives.

    Each getter returns the value or the default, and raises ``ValueError`` naming the
    provider and the key when the value is missing (with no default) or of the wrong
    kind, which the server reports as the plugin rejecting its configuration. Call
    :meth:`finish` last: it refuses keys nobody read, so a typo never passes silently::

        read = ConfigReader("rest", config)
        base_url = read.string("base_url")
        timeout = read.number("timeout_s", 30.0, minimum=0.1)
        api_key = read.secret("api_key")
        read.finish()
    """

    def __init__(self, provider: str, config: Mapping[str, object]) -> None:
        self._provider = provider
        self._config = config
        self._read: set[str] = set()

    def has(self, key: str) -> bool:
        """Whether ``key`` is set (marks it read)."""
        self._read.add(key)
        return key in self._config

    def string(self, key: str, default: str | None = None, *, choices: Sequence[str] = ()) -> str:
        """A non-empty string; with ``choices``, one of them."""
        value = self._get(key, default)
        if not isinstance(value, str) or not value:
            raise self._error(key, f"must be a non-empty string, got {_show(value)}")
        if choices and value not in choices:
            raise self._error(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def optional_string(self, key: str) -> str | None:
        """A non-empty string, or ``None`` when unset."""
        return self.string(key) if self.has(key) else None

    def boolean(self, key: str, default: bool | None = None) -> bool:
        """``true`` or ``false``."""
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self._error(key, f"must be true or false, got {_show(value)}")
        return value

    def integer(
        self,
        key: str,
        default: int | None = None,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int:
        """A whole number within ``minimum``..``maximum``."""
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._error(key, f"must be a whole number, got {_show(value)}")
        return self._in_range(key, value, minimum, maximum)

    def number(
        self,
        key: str,
        default: float | None = None,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> float:
        """A finite number within ``minimum``..``maximum``."""
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._error(key, f"must be a number, got {_show(value)}")
        if not math.isfinite(value):
            raise self._error(key, f"must be finite, got {value}")
        return self._in_range(key, float(value), minimum, maximum)

    def strings(self, key: str, default: Sequence[str] = ()) -> tuple[str, ...]:
        """A list of non-empty strings."""
        value = self._get(key, list(default))
        if not isinstance(value, list | tuple) or not all(
            isinstance(item, str) and item for item in value
        ):
            raise self._error(key, f"must be a list of non-empty strings, got {_show(value)}")
        return tuple(value)

    def table(self, key: str) -> Mapping[str, object]:
        """A nested table (empty when unset)."""
        value = self._get(key, {})
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise self._error(key, f"must be a table, got {_show(value)}")
        return value

    @overload
    def secret(self, key: str = ..., *, required: Literal[True] = ...) -> Secret: ...

    @overload
    def secret(self, key: str = ..., *, required: bool) -> Secret | None: ...

    def secret(self, key: str = "api_key", *, required: bool = True) -> Secret | None:
        """A :class:`~retouch.sdk.Secret` the server resolved from an environment
        variable (``api_key_env = "VAR"`` gives ``api_key``). A plain string is
        refused: secrets never belong in the config file."""
        self._read.add(key)
        value = self._config.get(key)
        if value is None:
            if required:
                raise self._error(
                    key,
                    f"is required: set {key}_env to the name of the environment variable "
                    f"that holds it",
                )
            return None
        if not isinstance(value, Secret):
            raise self._error(
                key,
                f'must come from an environment variable ({key}_env = "VAR"), never from '
                f"the config file itself",
            )
        return value

    def finish(self) -> None:
        """Refuse keys that no getter read."""
        unknown = sorted(set(self._config) - self._read)
        if unknown:
            raise ValueError(
                f"provider {self._provider!r}: unknown config key(s) {', '.join(unknown)}"
            )

    def mark_read(self, *keys: str) -> None:
        """Accept ``keys`` without reading them (keys the server itself interprets)."""
        self._read.update(keys)

    def _get(self, key: str, default: object) -> object:
        self._read.add(key)
        if key in self._config:
            return self._config[key]
        if default is None:
            raise self._error(key, "is required")
        return default

    def _in_range(self, key: str, value: N, minimum: N | None, maximum: N | None) -> N:
        if minimum is not None and value < minimum:
            raise self._error(key, f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise self._error(key, f"must be at most {maximum}, got {value}")
        return value

    def _error(self, key: str, problem: str) -> ValueError:
        return ValueError(f"provider {self._provider!r}: config key {key!r} {problem}")


def _show(value: object) -> str:
    if isinstance(value, Secret):
        return "a secret"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
