"""The circuit breaker: opens on provider-side failures, probes once, closes on success."""

from __future__ import annotations

import asyncio

import pytest

from retouch.sdk import ProviderError, ProviderRateLimited, ProviderRejected, ProviderUnavailable
from retouch.server.breaker import (
    Breakers,
    BreakerSettings,
    BreakerSettingsError,
    BreakerState,
    CircuitBreaker,
    Outcome,
    classify,
)
from retouch.server.clock import ManualClock

SETTINGS = BreakerSettings(failures=3, window_s=30.0, cooldown_s=10.0)


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        permit = breaker.try_acquire()
        assert permit is not None
        with pytest.raises(ProviderUnavailable), permit:
            raise ProviderUnavailable("upstream 503")


def succeed(breaker: CircuitBreaker) -> None:
    permit = breaker.try_acquire()
    assert permit is not None
    with permit:
        pass


def test_it_opens_after_the_configured_failures_within_the_window() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(SETTINGS, clock)
    fail(breaker, 2)
    assert breaker.snapshot().state is BreakerState.CLOSED
    assert breaker.snapshot().recent_failures == 2
    fail(breaker)
    snapshot = breaker.snapshot()
    assert snapshot.state is BreakerState.OPEN
    assert snapshot.reprobe_in_s == 10.0
    assert snapshot.reprobe_at == clock.now() + 10.0
    assert not snapshot.admits
    assert breaker.try_acquire() is None


def test_failures_older_than_the_window_are_forgotten() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(SETTINGS, clock)
    fail(breaker, 2)
    clock.advance(30.0)
    fail(breaker, 2)
    assert breaker.snapshot().state is BreakerState.CLOSED
    assert breaker.snapshot().recent_failures == 2


def test_after_the_cool_down_exactly_one_probe_goes_through_and_its_success_closes() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(SETTINGS, clock)
    fail(breaker, 3)
    clock.advance(9.5)
    assert breaker.snapshot().state is BreakerState.OPEN
    clock.advance(0.5)
    assert breaker.snapshot().state is BreakerState.HALF_OPEN
    probe = breaker.try_acquire()
    assert probe is not None
    assert probe.probe
    assert breaker.try_acquire() is None
    assert breaker.snapshot().probing
    assert not breaker.snapshot().admits
    with probe:
        pass
    snapshot = breaker.snapshot()
    assert (snapshot.state, snapshot.recent_failures) == (BreakerState.CLOSED, 0)
    assert breaker.try_acquire() is not None


def test_a_failed_probe_opens_it_again_for_another_cool_down() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(SETTINGS, clock)
    fail(breaker, 3)
    clock.advance(10.0)
    fail(breaker)
    snapshot = breaker.snapshot()
    assert snapshot.state is BreakerState.OPEN
    assert snapshot.reprobe_in_s == 10.0
    clock.advance(10.0)
    succeed(breaker)
    assert breaker.snapshot().state is BreakerState.CLOSED


@pytest.mark.parametrize(
    "error",
    [
        ProviderRejected("the mask is empty", field="mask"),
        asyncio.CancelledError(),
        TimeoutError(),
    ],
    ids=["bad input", "cancelled", "caller deadline"],
)
def test_the_callers_faults_and_cancellations_never_count(error: BaseException) -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(BreakerSettings(failures=1), clock)
    for _ in range(5):
        permit = breaker.try_acquire()
        assert permit is not None
        with pytest.raises(type(error)), permit:
            raise error
    assert breaker.snapshot().state is BreakerState.CLOSED
    assert breaker.snapshot().recent_failures == 0


def test_a_neutral_probe_gives_its_slot_back() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(BreakerSettings(failures=1, cooldown_s=5.0), clock)
    fail(breaker)
    clock.advance(5.0)
    probe = breaker.try_acquire()
    assert probe is not None
    with pytest.raises(asyncio.CancelledError), probe:
        raise asyncio.CancelledError
    snapshot = breaker.snapshot()
    assert (snapshot.state, snapshot.probing) == (BreakerState.HALF_OPEN, False)
    assert breaker.try_acquire() is not None


def test_a_late_answer_from_a_job_started_before_the_opening_does_not_close_it() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(BreakerSettings(failures=1), clock)
    early = breaker.try_acquire()
    assert early is not None
    fail(breaker)
    with early:
        pass
    assert breaker.snapshot().state is BreakerState.OPEN


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (None, Outcome.SUCCESS),
        (ProviderUnavailable("down"), Outcome.FAILURE),
        (ProviderRateLimited("429", retry_after=2.0), Outcome.FAILURE),
        (ProviderError("the answer was not JSON"), Outcome.FAILURE),
        (RuntimeError("plugin bug"), Outcome.FAILURE),
        (ProviderRejected("bad"), Outcome.NEUTRAL),
        (asyncio.CancelledError(), Outcome.NEUTRAL),
    ],
)
def test_outcomes(error: BaseException | None, outcome: Outcome) -> None:
    assert classify(error) is outcome


def test_each_provider_has_its_own_breaker_with_its_own_settings() -> None:
    clock = ManualClock()
    breakers = Breakers(clock, {"fragile": BreakerSettings(failures=1)})
    fail(breakers.breaker("fragile"))
    fail(breakers.breaker("sturdy"))
    assert breakers.snapshot("fragile").state is BreakerState.OPEN
    assert breakers.snapshot("sturdy").state is BreakerState.CLOSED
    assert breakers.try_acquire("fragile") is None


def test_settings_from_a_table_name_the_provider_and_setting() -> None:
    assert BreakerSettings.from_table("a", {"failures": 2, "cooldown_s": 5}) == BreakerSettings(
        failures=2, window_s=30.0, cooldown_s=5.0
    )
    cases: list[tuple[dict[str, object], str]] = [
        ({"failures": 0}, "failures must be at least 1"),
        ({"failures": 1.5}, "failures must be a whole number"),
        ({"cooldown_s": "soon"}, "cooldown_s must be a number"),
        ({"window_s": -1}, "window_s and cooldown_s must be positive"),
        ({"colour": 1}, "unknown settings colour"),
    ]
    for table, words in cases:
        with pytest.raises(BreakerSettingsError) as refused:
            BreakerSettings.from_table("replicate", table)
        assert "[providers.replicate.circuit_breaker]" in str(refused.value)
        assert words in str(refused.value)
