"""Provider secrets: named in the config, read from the environment, never printed.

A provider's table names the environment variable holding each secret with a setting
ending in ``_env``::

    [providers.replicate]
    api_key_env = "REPLICATE_API_TOKEN"

The provider's ``start`` then receives ``api_key`` as a :class:`retouch.sdk.Secret`
(whose ``str`` and ``repr`` are redacted; ``reveal()`` gives the value) and never sees
``api_key_env``. The config file itself may not hold a secret: a literal ``api_key``
(or ``api_token``, ``token``, ``secret``, ``password``) is refused when the config is
loaded. A variable that is unset or empty leaves that provider out at start-up, reported
by name like any plugin that fails to start. What the server shows, logs or traces
about a provider (why it was left out, its health, the exceptions its jobs raised) has
its secrets' values scrubbed, even when a plugin or its upstream echoed them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from retouch.sdk import Secret

ENV_SUFFIX = "_env"
SECRET_SETTINGS = frozenset({"api_key", "api_token", "token", "secret", "password"})
"""Settings that are secrets by their name: refused as literals in the config file."""
REDACTED = "***"


class MissingSecret(Exception):
    """A variable named by an ``<setting>_env`` setting is not set; the message names it."""


def literal_secrets(table: Mapping[str, Any]) -> list[str]:
    """Settings of a provider table that hold a secret literally, sorted."""
    return sorted(
        key
        for key in table
        if key in SECRET_SETTINGS or (not key.endswith(ENV_SUFFIX) and key + ENV_SUFFIX in table)
    )


def bad_variable_names(table: Mapping[str, Any]) -> list[str]:
    """``<setting>_env`` settings whose value is not the name of a variable, sorted."""
    return sorted(
        key
        for key, value in table.items()
        if key.endswith(ENV_SUFFIX)
        and not (isinstance(value, str) and value and "=" not in value and value.strip() == value)
    )


def resolve_secrets(
    provider: str, table: Mapping[str, Any], environ: Mapping[str, str]
) -> tuple[dict[str, Any], tuple[Secret, ...]]:
    """The config ``provider``'s ``start`` receives, and the secrets in it.

    Each ``<setting>_env = "VAR"`` becomes ``<setting> = Secret($VAR)``; raises
    :class:`MissingSecret` naming the variable when it is unset or empty.
    """
    config: dict[str, Any] = {}
    secrets: list[Secret] = []
    for key, value in table.items():
        if not key.endswith(ENV_SUFFIX):
            config[key] = value
            continue
        setting = key.removesuffix(ENV_SUFFIX)
        raw = environ.get(str(value), "")
        if not raw:
            raise MissingSecret(
                f"the environment variable {value} named by {key} is not set; "
                f"set it to provider {provider!r}'s {setting}"
            )
        secret = Secret(raw)
        config[setting] = secret
        secrets.append(secret)
    return config, tuple(secrets)


def scrub(text: str, secrets: Iterable[Secret]) -> str:
    """``text`` with the value of every one of ``secrets`` replaced by ``***``."""
    for secret in secrets:
        value = secret.reveal()
        if value:
            text = text.replace(value, REDACTED)
    return text


@contextmanager
def scrubbing(secrets: Sequence[Secret]) -> Iterator[None]:
    """Scrub ``secrets`` from any exception leaving the block (and the exceptions it
    chains), before a span, a log line or a caller's status is made of it."""
    try:
        yield
    except Exception as error:
        if secrets:
            _scrub_exception(error, secrets)
        raise


def _scrub_exception(error: BaseException, secrets: Sequence[Secret]) -> None:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.args = tuple(
            scrub(arg, secrets) if isinstance(arg, str) else arg for arg in current.args
        )
        message = getattr(current, "message", None)
        if isinstance(message, str):
            current.message = scrub(message, secrets)  # type: ignore[attr-defined]
        current = current.__cause__ or current.__context__


__all__ = [
    "MissingSecret",
    "bad_variable_names",
    "literal_secrets",
    "resolve_secrets",
    "scrub",
    "scrubbing",
]
