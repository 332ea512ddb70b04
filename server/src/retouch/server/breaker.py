"""A circuit breaker per provider, fed by the outcomes of the jobs it ran.

    CLOSED ──(``failures`` provider-side failures within ``window_s``)──► OPEN
    OPEN ──(``cooldown_s`` later)──► HALF_OPEN: exactly one probe job may run
    HALF_OPEN ──probe succeeds──► CLOSED  |  ──probe fails──► OPEN (a new cool-down)

Only provider-side failures count: the provider was unavailable, timed out, was rate
limited, answered badly or broke its contract. A request the provider refused as bad
input, a cancelled job and a job whose caller's deadline passed say nothing about the
provider's health: they are neutral, and a neutral probe gives its slot back.

The router leaves out providers whose breaker is open (or half-open with its probe
taken), so a dead upstream costs callers no time: they are refused before anything is
reserved or sent. Time comes from the injected :class:`~retouch.server.clock.Clock`.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from retouch.sdk import ProviderRejected

from .clock import Clock


class BreakerState(enum.Enum):
    """Where a breaker is in its cycle."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerSettingsError(ValueError):
    """A ``circuit_breaker`` table is invalid; the message names the provider and setting."""


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """When a provider's breaker opens and how long it stays open."""

    failures: int = 5
    """Provider-side failures within ``window_s`` that open the breaker."""
    window_s: float = 30.0
    cooldown_s: float = 30.0
    """Seconds an open breaker waits before letting one probe job through."""

    def __post_init__(self) -> None:
        if self.failures < 1:
            raise BreakerSettingsError("failures must be at least 1")
        if self.window_s <= 0 or self.cooldown_s <= 0:
            raise BreakerSettingsError("window_s and cooldown_s must be positive")

    @classmethod
    def from_table(cls, provider: str, table: Mapping[str, Any]) -> BreakerSettings:
        """Settings from a ``[providers.<name>.circuit_breaker]`` table."""
        where = f"[providers.{provider}.circuit_breaker]"
        unknown = set(table) - {"failures", "window_s", "cooldown_s"}
        if unknown:
            raise BreakerSettingsError(f"{where}: unknown settings {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for name, kind in (("failures", int), ("window_s", float), ("cooldown_s", float)):
            if name not in table:
                continue
            value = table[name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise BreakerSettingsError(f"{where}: {name} must be a number, not {value!r}")
            if kind is int and value != int(value):
                raise BreakerSettingsError(f"{where}: {name} must be a whole number")
            values[name] = kind(value)
        try:
            return cls(**values)
        except BreakerSettingsError as exc:
            raise BreakerSettingsError(f"{where}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A breaker's state as callers see it."""

    state: BreakerState
    reprobe_in_s: float = 0.0
    """Seconds until an open breaker lets a probe through (0 otherwise)."""
    reprobe_at: float = 0.0
    """Wall time of that probe, in seconds since the epoch (0 when not open)."""
    recent_failures: int = 0
    """Provider-side failures counted in the current window."""
    probing: bool = False
    """Whether a half-open breaker's one probe job is running."""

    @property
    def admits(self) -> bool:
        """Whether the router may give this provider a job now."""
        return self.state is BreakerState.CLOSED or (
            self.state is BreakerState.HALF_OPEN and not self.probing
        )

    def describe(self) -> str:
        """Why a provider is left out, for the routing explanation."""
        if self.state is BreakerState.OPEN:
            return (
                f"circuit breaker open after {self.recent_failures} failure(s); "
                f"re-probe in {self.reprobe_in_s:.2f} s"
            )
        if self.probing:
            return "circuit breaker half-open; its one probe job is running"
        return f"circuit breaker {self.state.value}"


class Outcome(enum.Enum):
    """What a job said about its provider's health."""

    SUCCESS = "success"
    FAILURE = "failure"
    NEUTRAL = "neutral"


def classify(error: BaseException | None) -> Outcome:
    """The outcome of a provider call that ended with ``error`` (None: it answered)."""
    if error is None:
        return Outcome.SUCCESS
    if isinstance(error, ProviderRejected | asyncio.CancelledError | TimeoutError):
        # Bad input, a cancelled job and the caller's deadline are nobody's upstream fault.
        return Outcome.NEUTRAL
    # Any other ProviderError, or an exception the plugin let escape, is the provider's.
    return Outcome.FAILURE if isinstance(error, Exception) else Outcome.NEUTRAL


@dataclass(slots=True)
class CircuitBreaker:
    """One provider's breaker."""

    settings: BreakerSettings
    clock: Clock
    _failures: deque[float] = field(default_factory=deque)
    _opened_at: float | None = None
    _opened_wall: float = 0.0
    _probing: bool = False

    def snapshot(self) -> BreakerSnapshot:
        """The state now; an open breaker whose cool-down ended reads as half-open."""
        now = self.clock.monotonic()
        self._forget_old(now)
        if self._opened_at is None:
            return BreakerSnapshot(BreakerState.CLOSED, recent_failures=len(self._failures))
        wait = self._opened_at + self.settings.cooldown_s - now
        if wait > 0:
            return BreakerSnapshot(
                BreakerState.OPEN,
                reprobe_in_s=wait,
                reprobe_at=self._opened_wall + self.settings.cooldown_s,
                recent_failures=len(self._failures),
            )
        return BreakerSnapshot(
            BreakerState.HALF_OPEN, recent_failures=len(self._failures), probing=self._probing
        )

    def try_acquire(self) -> Permit | None:
        """Ask to call the provider: a permit to feed the call's outcome back, or None
        when the breaker is open. A half-open breaker grants one permit, to its probe."""
        snapshot = self.snapshot()
        if snapshot.state is BreakerState.CLOSED:
            return Permit(self, probe=False)
        if snapshot.state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return Permit(self, probe=True)
        return None

    def record(self, outcome: Outcome, *, probe: bool) -> None:
        """Feed the outcome of one permitted call."""
        if probe:
            self._probing = False
            if outcome is Outcome.SUCCESS:
                self._close()
            elif outcome is Outcome.FAILURE:
                self._open(self.clock.monotonic())
            return
        if outcome is not Outcome.FAILURE:
            return
        now = self.clock.monotonic()
        self._failures.append(now)
        self._forget_old(now)
        if self._opened_at is None and len(self._failures) >= self.settings.failures:
            self._open(now)

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._opened_wall = self.clock.now()

    def _close(self) -> None:
        self._opened_at = None
        self._failures.clear()

    def _forget_old(self, now: float) -> None:
        horizon = now - self.settings.window_s
        while self._failures and self._failures[0] <= horizon:
            self._failures.popleft()


class Breakers:
    """Every provider's breaker, created on first use with its configured settings."""

    def __init__(
        self,
        clock: Clock,
        settings: Mapping[str, BreakerSettings] | None = None,
        default: BreakerSettings | None = None,
    ) -> None:
        self._clock = clock
        self._settings = dict(settings or {})
        self._default = default or BreakerSettings()
        self._breakers: dict[str, CircuitBreaker] = {}

    def breaker(self, provider: str) -> CircuitBreaker:
        found = self._breakers.get(provider)
        if found is None:
            settings = self._settings.get(provider, self._default)
            found = self._breakers[provider] = CircuitBreaker(settings, self._clock)
        return found

    def snapshot(self, provider: str) -> BreakerSnapshot:
        return self.breaker(provider).snapshot()

    def try_acquire(self, provider: str) -> Permit | None:
        return self.breaker(provider).try_acquire()


@dataclass(slots=True)
class Permit:
    """Leave to call a provider once; as a context manager it feeds the outcome of the
    call made inside the block (success, or the exception it raised) to the breaker."""

    breaker: CircuitBreaker
    probe: bool

    def __enter__(self) -> Permit:
        return self

    def __exit__(self, kind: object, error: BaseException | None, trace: object) -> None:
        self.breaker.record(classify(error), probe=self.probe)


__all__ = [
    "BreakerSettings",
    "BreakerSettingsError",
    "BreakerSnapshot",
    "BreakerState",
    "Breakers",
    "CircuitBreaker",
    "Outcome",
    "Permit",
    "classify",
]
