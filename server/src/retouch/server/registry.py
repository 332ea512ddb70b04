"""Provider discovery: entry points in ``retouch.providers``, validated and started.

Built-in providers register exactly like third-party ones. A plugin that fails to
import, to build, to validate or to start is logged with its name and the reason and
left out; it never takes the server down.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from retouch.sdk import (
    ENTRY_POINT_GROUP,
    SDK_API_VERSION,
    Health,
    HealthReport,
    Manifest,
    Provider,
    ProviderNotConfigured,
    Secret,
)

from .secrets import MissingSecret, resolve_secrets, scrub

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0


@dataclass(slots=True)
class LoadedProvider:
    """A started provider and its last known health."""

    provider: Provider
    manifest: Manifest
    health: HealthReport
    secrets: tuple[Secret, ...] = ()
    """The secrets its config holds, scrubbed from whatever the server says about it."""

    @property
    def name(self) -> str:
        return self.manifest.name


class PluginError(Exception):
    """Why a plugin was left out."""


class NotConfigured(PluginError):
    """The plugin needs configuration it was not given (it stays off, not broken)."""


class ProviderRegistry:
    """The providers this server runs, by name."""

    def __init__(self) -> None:
        self.providers: dict[str, LoadedProvider] = {}
        self.broken: dict[str, str] = {}
        self.unconfigured: dict[str, str] = {}
        """Providers left off because they need configuration they were not given."""

    @classmethod
    async def discover(
        cls,
        *,
        configs: Mapping[str, Mapping[str, Any]],
        disabled: Iterable[str] = (),
        entries: Iterable[EntryPoint] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> ProviderRegistry:
        """Load, validate and start every provider registered under the entry point group.

        ``<setting>_env`` settings in a provider's config are read from ``environ``
        (default: the process environment) and passed to ``start`` as secrets.
        """
        registry = cls()
        env = os.environ if environ is None else environ
        skip = set(disabled)
        for entry in entry_points(group=ENTRY_POINT_GROUP) if entries is None else entries:
            if entry.name in skip:
                log.info("provider %s is disabled by configuration", entry.name)
                continue
            secrets: tuple[Secret, ...] = ()
            try:
                config, secrets = resolve_secrets(entry.name, configs.get(entry.name, {}), env)
                loaded = await _load(entry, config)
                loaded.secrets = secrets
            except asyncio.CancelledError:
                raise
            except NotConfigured as exc:
                registry.unconfigured[entry.name] = str(exc)
                log.info("provider %s is off: %s", entry.name, exc)
                continue
            except Exception as exc:
                reason = scrub(
                    str(exc)
                    if isinstance(exc, PluginError | MissingSecret)
                    else f"{type(exc).__name__}: {exc}",
                    secrets,
                )
                registry.broken[entry.name] = reason
                log.error("provider plugin %r (%s) left out: %s", entry.name, entry.value, reason)
                continue
            if loaded.name in registry.providers:
                registry.broken[entry.name] = f"a provider named {loaded.name!r} is already loaded"
                log.error("provider plugin %r left out: duplicate name", entry.name)
                await loaded.provider.aclose()
                continue
            registry.providers[loaded.name] = loaded
            log.info(
                "provider %s %s loaded: %s",
                loaded.name,
                loaded.manifest.version,
                ", ".join(sorted(op.value for op in loaded.manifest.operations)),
            )
        return registry

    def add(self, loaded: LoadedProvider) -> None:
        """Register an already started provider (tests, embedding)."""
        self.providers[loaded.name] = loaded

    def get(self, name: str) -> LoadedProvider | None:
        return self.providers.get(name)

    async def refresh_health(self) -> None:
        """Ask every provider for its health; a provider that fails to answer is unavailable."""
        for loaded in self.providers.values():
            try:
                report = await asyncio.wait_for(loaded.provider.health(), timeout=5.0)
                loaded.health = HealthReport(report.health, scrub(report.detail, loaded.secrets))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                detail = scrub(f"health check failed: {exc}", loaded.secrets)
                loaded.health = HealthReport(Health.UNAVAILABLE, detail)

    async def aclose(self) -> None:
        for loaded in self.providers.values():
            try:
                await loaded.provider.aclose()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("provider %s failed to close", loaded.name)


async def _load(entry: EntryPoint, config: Mapping[str, Any]) -> LoadedProvider:
    try:
        factory = entry.load()
    except Exception as exc:
        raise PluginError(f"cannot import {entry.value}: {type(exc).__name__}: {exc}") from exc
    if not callable(factory):
        raise PluginError(f"{entry.value} is not a class or factory")
    provider = factory()
    manifest = validate_provider(provider, entry.name)
    try:
        await asyncio.wait_for(provider.start(config), timeout=START_TIMEOUT_S)
    except ProviderNotConfigured as exc:
        raise NotConfigured(str(exc)) from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise PluginError(f"rejected its configuration: {exc}") from exc
    except TimeoutError as exc:
        raise PluginError(f"did not start within {START_TIMEOUT_S:.0f} s") from exc
    # Read again: a provider's models and prices may come from its config.
    manifest = validate_provider(provider, entry.name)
    return LoadedProvider(provider=provider, manifest=manifest, health=HealthReport(Health.HEALTHY))


def validate_provider(provider: object, entry_name: str) -> Manifest:
    """Check a provider's shape and manifest; raise :class:`PluginError` naming what is wrong."""
    manifest = getattr(provider, "manifest", None)
    if not isinstance(manifest, Manifest):
        raise PluginError(f"its manifest is {type(manifest).__name__}, not retouch.sdk.Manifest")
    if manifest.sdk_api_version != SDK_API_VERSION:
        raise PluginError(
            f"it was built for SDK API {manifest.sdk_api_version}; this server speaks "
            f"{SDK_API_VERSION}"
        )
    if manifest.name != entry_name:
        raise PluginError(
            f"its manifest names it {manifest.name!r} but its entry point is {entry_name!r}"
        )
    for method in ("start", "aclose", "health"):
        if not inspect.iscoroutinefunction(getattr(provider, method, None)):
            raise PluginError(f"{method}() must be an async method")
    run = getattr(provider, "run", None)
    if not (inspect.isasyncgenfunction(run) or callable(run)):
        raise PluginError("run() must be an async generator method")
    return manifest
