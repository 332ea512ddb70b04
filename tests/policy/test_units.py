"""The policy's parts on their own: plans, buckets, adaptive rates, the ledger."""

from __future__ import annotations

from pathlib import Path

import pytest

from retouch.server.clock import ManualClock
from retouch.server.config import ConfigError, load_config
from retouch.server.database.migrations import migrate_sqlite
from retouch.server.database.sqlite import connect_sqlite
from retouch.server.errors import ResourceExhausted
from retouch.server.policy import (
    AdaptiveRate,
    Bucket,
    MemoryRateLimiter,
    Plan,
    PlanError,
    SqliteLedger,
)


def test_plans_validate_their_settings() -> None:
    with pytest.raises(PlanError, match="burst"):
        Plan("bad", burst=0)
    with pytest.raises(PlanError, match="output_formats"):
        Plan("bad", output_formats=("GIF",))
    with pytest.raises(PlanError, match="unknown settings colour"):
        Plan.from_table("bad", {"colour": "red"})
    assert (
        Plan("p", credits=True, credits_per_job=1, credits_per_megapixel=2).surcharge(1500, 1000)
        == 1 + 2 * 2
    )


def test_plans_come_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[plans.free]\nmonthly_jobs = 5\nallowed_providers = ["opencv"]\n'
        '[[tenants]]\nname = "t"\nkey_sha256 = "' + "a" * 64 + '"\ndefault_plan = "free"\n'
    )
    config = load_config(path, environ={})
    plan = config.plans.get("free")
    assert plan is not None
    assert (plan.monthly_jobs, plan.allowed_providers) == (5, ("opencv",))
    path.write_text(path.read_text().replace('default_plan = "free"', 'default_plan = "gold"'))
    with pytest.raises(ConfigError, match="gold"):
        load_config(path, environ={})


async def test_a_bucket_refills_at_its_rate_up_to_its_capacity() -> None:
    clock = ManualClock()
    limiter = MemoryRateLimiter(clock)
    bucket = Bucket("k", rate=2, capacity=3)
    taken = [(await limiter.acquire([bucket])).allowed for _ in range(4)]
    assert taken == [True, True, True, False]
    denied = await limiter.acquire([bucket])
    assert denied.retry_after == pytest.approx(0.5)
    clock.advance(10)
    assert (await limiter.peek(bucket)).tokens == 3


def test_an_adaptive_rate_halves_and_recovers_slowly() -> None:
    clock = ManualClock()
    rate = AdaptiveRate(10.0, clock)
    rate.throttled()
    assert rate.current == 5.0
    rate.throttled()
    assert rate.current == 2.5
    clock.advance(60)
    assert rate.current == pytest.approx(3.5)
    clock.advance(3600)
    assert rate.current == 10.0


async def test_the_ledger_reserves_commits_and_releases_exactly(tmp_path: Path) -> None:
    connection = connect_sqlite(tmp_path / "l.db")
    migrate_sqlite(connection)
    ledger = SqliteLedger(connection)
    owner = "t/user:1"
    assert await ledger.grant(owner, 10, request_id="g", note="", now=0) == 10
    await ledger.reserve(
        "j1", owner, credits=4, period="2027-01", quota=2, charge_credits=True, now=0
    )
    await ledger.reserve(
        "j2", owner, credits=4, period="2027-01", quota=2, charge_credits=True, now=0
    )
    with pytest.raises(ResourceExhausted) as quota:
        await ledger.reserve(
            "j3", owner, credits=1, period="2027-01", quota=2, charge_credits=True, now=0
        )
    assert quota.value.reason == "MONTHLY_QUOTA_EXHAUSTED"
    await ledger.commit("j1", 3, now=1)
    assert await ledger.release("j2", now=1, note="failed")
    assert not await ledger.release("j2", now=1, note="again")
    await ledger.commit("j1", 3, now=1)  # settling twice changes nothing
    balance = await ledger.balance(owner, "2027-01")
    assert (balance.available, balance.held, balance.jobs_used) == (7, 0, 1)
    with pytest.raises(ResourceExhausted) as credits:
        await ledger.reserve(
            "j4", owner, credits=8, period="2027-02", quota=None, charge_credits=True, now=2
        )
    assert credits.value.reason == "INSUFFICIENT_CREDITS"
    assert await ledger.audit(owner)
