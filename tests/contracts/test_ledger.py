"""The Ledger contract, over every backend, with races across two connections."""

from __future__ import annotations

import asyncio

import pytest

from retouch.server.errors import InvalidArgument, ResourceExhausted
from retouch.server.policy import MAX_CREDITS, Balance, Ledger
from tests.contracts.conftest import Backend

OWNER = "dev/user:1"
PERIOD = "2027-01"


async def two_ledgers(backend: Backend) -> tuple[Ledger, Ledger]:
    return (await backend.open()).ledger, (await backend.open()).ledger


async def reserve(
    ledger: Ledger, job_id: str, credits: int = 1, *, quota: int | None = None
) -> Balance:
    return await ledger.reserve(
        job_id, OWNER, credits=credits, period=PERIOD, quota=quota, charge_credits=True, now=0
    )


async def attempt(ledger: Ledger, job_id: str, credits: int, quota: int | None) -> bool:
    try:
        await reserve(ledger, job_id, credits, quota=quota)
    except ResourceExhausted:
        return False
    return True


async def test_reserve_commit_and_release_move_exactly(backend: Backend) -> None:
    ledger = (await backend.open()).ledger
    assert await ledger.grant(OWNER, 10, request_id="g1", note="", now=0) == 10
    assert await reserve(ledger, "j1", 4, quota=2) == Balance(6, 4, 1)
    assert await reserve(ledger, "j2", 4, quota=2) == Balance(2, 8, 2)
    with pytest.raises(ResourceExhausted) as quota:
        await reserve(ledger, "j3", 1, quota=2)
    assert "quota" in quota.value.message
    await ledger.commit("j1", 3, now=1)  # actual cost below the reservation: 1 back
    await ledger.commit("j1", 3, now=1)  # settled once only
    assert await ledger.release("j2", now=1, note="failed")
    assert not await ledger.release("j2", now=1, note="again")
    assert not await ledger.release("j1", now=1, note="committed already")
    assert await ledger.balance(OWNER, PERIOD) == Balance(7, 0, 1)
    assert [r.job_id for r in await ledger.held_reservations()] == []
    assert await ledger.audit(OWNER)


async def test_commit_charges_at_most_what_is_held(backend: Backend) -> None:
    ledger = (await backend.open()).ledger
    await ledger.grant(OWNER, 10, request_id="", note="", now=0)
    await reserve(ledger, "j1", 4)
    held = await ledger.held_reservations()
    assert [(r.job_id, r.owner, r.credits, r.period) for r in held] == [("j1", OWNER, 4, PERIOD)]
    await ledger.commit("j1", 99, now=1)
    assert await ledger.balance(OWNER, PERIOD) == Balance(6, 0, 1)
    assert await ledger.audit(OWNER)


async def test_forty_concurrent_reserves_on_ten_credits_never_overspend(
    backend: Backend,
) -> None:
    ledgers = await two_ledgers(backend)
    await ledgers[0].grant(OWNER, 10, request_id="", note="", now=0)
    taken = await asyncio.gather(*(attempt(ledgers[i % 2], f"job_{i}", 1, None) for i in range(40)))
    assert sum(taken) == 10
    assert await ledgers[1].balance(OWNER, PERIOD) == Balance(0, 10, 10)
    assert await ledgers[0].audit(OWNER)


async def test_concurrent_reserves_count_no_more_jobs_than_the_quota(backend: Backend) -> None:
    ledgers = await two_ledgers(backend)
    taken = await asyncio.gather(
        *(
            ledgers[i % 2].reserve(
                f"job_{i}", OWNER, credits=0, period=PERIOD, quota=5, charge_credits=False, now=0
            )
            for i in range(30)
        ),
        return_exceptions=True,
    )
    assert sum(isinstance(t, Balance) for t in taken) == 5
    assert all(isinstance(t, Balance | ResourceExhausted) for t in taken)
    assert (await ledgers[0].balance(OWNER, PERIOD)).jobs_used == 5
    assert await ledgers[1].audit(OWNER)


async def test_a_reservation_settles_once_when_two_replicas_race(backend: Backend) -> None:
    first, second = await two_ledgers(backend)
    await first.grant(OWNER, 10, request_id="", note="", now=0)
    for i in range(10):
        await reserve(first, f"job_{i}", 1)
    await asyncio.gather(
        *(first.commit(f"job_{i}", 1, now=1) for i in range(10)),
        *(second.release(f"job_{i}", now=1, note="lease expired") for i in range(10)),
    )
    balance = await second.balance(OWNER, PERIOD)
    assert balance.held == 0
    charged = 10 - balance.available
    assert balance.jobs_used == charged  # a released job stops counting; a charged one stays
    assert await first.audit(OWNER)


async def test_adjust_moves_a_held_reservation_to_a_fallback_price(backend: Backend) -> None:
    ledger = (await backend.open()).ledger
    await ledger.grant(OWNER, 10, request_id="", note="", now=0)
    await reserve(ledger, "j1", 4)
    await ledger.adjust("j1", 6, now=1)
    assert await ledger.balance(OWNER, PERIOD) == Balance(4, 6, 1)
    with pytest.raises(ResourceExhausted):
        await ledger.adjust("j1", 11, now=1)
    await ledger.adjust("j1", 2, now=1)
    await ledger.commit("j1", 2, now=2)
    await ledger.adjust("j1", 5, now=3)  # settled: nothing to adjust
    assert await ledger.balance(OWNER, PERIOD) == Balance(8, 0, 1)
    assert await ledger.audit(OWNER)


async def test_a_grant_repeated_with_its_request_id_grants_once(backend: Backend) -> None:
    ledgers = await two_ledgers(backend)
    balances = await asyncio.gather(
        *(ledgers[i % 2].grant(OWNER, 5, request_id="once", note="", now=0) for i in range(10))
    )
    assert set(balances) == {5}
    assert await ledgers[0].grant(OWNER, 5, request_id="twice", note="", now=0) == 10
    assert await ledgers[1].audit(OWNER)


async def test_a_grant_request_id_reused_for_another_amount_is_refused(backend: Backend) -> None:
    ledgers = await two_ledgers(backend)
    assert await ledgers[0].grant(OWNER, 3, request_id="g1", note="", now=0) == 3
    with pytest.raises(InvalidArgument) as reused:
        await ledgers[1].grant(OWNER, 7, request_id="g1", note="", now=0)
    (violation,) = reused.value.violations
    assert violation.field == "request_id"
    assert "already used for a different request" in violation.description
    assert await ledgers[1].grant(OWNER, 3, request_id="g1", note="", now=0) == 3
    assert await ledgers[0].grant("acme/user:2", 7, request_id="g1", note="", now=0) == 7
    assert await ledgers[0].balance(OWNER, PERIOD) == Balance(3, 0, 0)
    assert await ledgers[1].audit(OWNER)


async def test_amounts_and_balances_are_bounded(backend: Backend) -> None:
    ledger = (await backend.open()).ledger
    for credits in (0, -1, MAX_CREDITS + 1, 2**63, 2**64):
        with pytest.raises(InvalidArgument):
            await ledger.grant(OWNER, credits, request_id="", note="", now=0)
    assert await ledger.grant(OWNER, MAX_CREDITS, request_id="", note="", now=0) == MAX_CREDITS
    with pytest.raises(InvalidArgument, match="past the largest balance"):
        await ledger.grant(OWNER, 1, request_id="", note="", now=0)
    with pytest.raises(InvalidArgument):
        await reserve(ledger, "j_huge", 2**63)
    # The account still works after every refusal.
    assert await reserve(ledger, "j1", 5) == Balance(MAX_CREDITS - 5, 5, 1)
    await ledger.commit("j1", 5, now=1)
    assert await ledger.balance(OWNER, PERIOD) == Balance(MAX_CREDITS - 5, 0, 1)
    assert await ledger.audit(OWNER)


async def test_plans_are_set_per_subject(backend: Backend) -> None:
    first, second = await two_ledgers(backend)
    assert await first.plan_of(OWNER) is None
    await first.set_plan(OWNER, "pro", now=1)
    await second.set_plan(OWNER, "team", now=2)
    assert await first.plan_of(OWNER) == "team"
    assert await second.plan_of("dev/other") is None
