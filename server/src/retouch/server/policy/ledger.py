"""The credit and quota ledger: append-only entries, with balances kept beside them.

Every change is one :class:`Entry` of deltas — to available credits, held (reserved)
credits and counted jobs — written in the same transaction as the balances it moves, so
the balances always equal the sums of the entries (``audit`` checks that). A job's money
moves in two steps, like a two-phase transfer: ``reserve`` before the provider runs, then
exactly one of ``commit`` (charge the actual cost, return the rest) or ``release``
(return it all); a reservation settled once is never settled again.

Each move is atomic against every other connection and replica: the backends hold the
subject's account row locked (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a row lock, like
``SELECT … FOR UPDATE``) from reading the balance to writing the entry, so concurrent
reserves can never overspend. CHECK constraints keep balances between 0 and
:data:`MAX_CREDITS` and job counts non-negative, whatever a bug upstream asks for.

The entries are computed here, once, from the locked state; the backends only lock,
read and apply them: :mod:`.sqlite_ledger`, :mod:`.postgres_ledger`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

from ..errors import InvalidArgument, QuotaViolation, ResourceExhausted

MAX_CREDITS = 2**62
"""The most credits an amount or a balance may hold: any sum of two stays in 64 bits."""


@dataclass(frozen=True, slots=True)
class Balance:
    """A subject's credits and jobs counted in one quota period."""

    available: int
    held: int
    jobs_used: int


@dataclass(frozen=True, slots=True)
class Reservation:
    """What a job holds until it ends."""

    job_id: str
    owner: str
    credits: int
    period: str
    created_at: float


class Ledger(Protocol):
    """Credits, quotas and plans per subject (``owner`` = ``<tenant>/<subject>``)."""

    async def plan_of(self, owner: str) -> str | None: ...

    async def set_plan(self, owner: str, plan: str, now: float) -> None: ...

    async def balance(self, owner: str, period: str) -> Balance: ...

    async def grant(
        self, owner: str, credits: int, *, request_id: str, note: str, now: float
    ) -> int:
        """Add credits; a repeated ``request_id`` grants once. Returns the balance.

        INVALID_ARGUMENT when ``credits`` is not in 1..:data:`MAX_CREDITS`, the balance
        would pass :data:`MAX_CREDITS`, or ``request_id`` already granted this owner a
        different amount (checked under the account's lock).
        """

    async def reserve(
        self,
        job_id: str,
        owner: str,
        *,
        credits: int,
        period: str,
        quota: int | None,
        charge_credits: bool,
        now: float,
    ) -> Balance:
        """Hold one job of quota and ``credits``, or raise RESOURCE_EXHAUSTED.

        Checks and holds under the account's lock, so concurrent reserves never hold
        more than is available nor count more jobs than ``quota``.
        """

    async def adjust(self, job_id: str, credits: int, *, now: float) -> None:
        """Change a held reservation to ``credits`` (a fallback provider's price), under
        the same lock; RESOURCE_EXHAUSTED when the difference is not available."""

    async def commit(self, job_id: str, charged: int, *, now: float) -> None:
        """Charge ``charged`` (clamped to 0..held) and return the rest; nothing when the
        reservation is not held any more (committed or released already)."""

    async def release(self, job_id: str, *, now: float, note: str) -> bool:
        """Return everything a held reservation holds; False if none was held."""

    async def held_reservations(self) -> list[Reservation]: ...

    async def audit(self, owner: str) -> bool:
        """Whether the balances equal the sums of the ledger entries."""


# Entry and Held are NamedTuples, not frozen dataclasses: a settlement builds both, and a
# frozen dataclass's __init__ costs microseconds the embedded ledger's commit would show.


class Held(NamedTuple):
    """A held reservation, read under its lock."""

    owner: str
    period: str
    credits: int


class Entry(NamedTuple):
    """One ledger entry: what it moves, and why; its fields are the ledger's columns."""

    owner: str
    kind: str
    job_id: str
    period: str
    available: int
    held: int
    jobs: int
    request_id: str = ""
    note: str = ""

    def row(self, now: float) -> tuple[object, ...]:
        """The ledger row of this entry, in :data:`ENTRY_COLUMNS` order."""
        return (*self, now)


ENTRY_COLUMNS = (
    "owner, kind, job_id, period, available_delta, held_delta, jobs_delta, request_id, note, "
    "created_at"
)
IDEMPOTENT_GRANT = "kind = 'grant' AND request_id <> ''"
"""The predicate of the partial unique index on grants by request_id. A lookup repeats
it, or the planner cannot prove the bound request_id non-empty and ignores the index."""


def same_grant(granted: int, credits: int) -> None:
    """Refuse a grant's request_id reused for a different amount: a retry repeats the
    amount, so a different one is a new grant that would otherwise vanish."""
    if granted != credits:
        raise InvalidArgument(
            "request_id",
            f"this request_id was already used for a different request (a grant of "
            f"{granted} credits); use a new request_id for a new grant",
        )


def grant_entry(owner: str, credits: int, available: int, *, request_id: str, note: str) -> Entry:
    """The entry granting ``credits`` to an account with ``available`` credits."""
    check_credits("credits", credits, minimum=1)
    if available + credits > MAX_CREDITS:
        raise InvalidArgument(
            "credits",
            f"granting {credits} credits would take the balance of {available} past "
            f"the largest balance, {MAX_CREDITS}",
        )
    return Entry(owner, "grant", "", "", credits, 0, 0, request_id, note)


def reserve_entry(
    job_id: str,
    owner: str,
    balance: Balance,
    *,
    credits: int,
    period: str,
    quota: int | None,
    charge_credits: bool,
) -> Entry:
    """The entry holding a job's quota and credits, or RESOURCE_EXHAUSTED."""
    check_credits("credits", credits)
    refuse_unless_affordable(
        owner, balance, credits=credits, quota=quota, charge_credits=charge_credits
    )
    held = credits if charge_credits else 0
    return Entry(owner, "reserve", job_id, period, -held, held, 1)


def adjust_entry(job_id: str, held: Held, credits: int, available: int) -> Entry | None:
    """The entry moving a held reservation to ``credits``; None when nothing changes."""
    check_credits("credits", credits)
    if held.credits == 0 or credits == held.credits:
        return None  # a reservation that holds no credits is on a plan without them
    delta = credits - held.credits
    if delta > available:
        raise ResourceExhausted(
            f"the fallback provider costs {credits} credits; only "
            f"{available + held.credits} are available",
            violations=[QuotaViolation(f"{held.owner}:credits", "not enough credits")],
            reason="INSUFFICIENT_CREDITS",
        )
    return Entry(held.owner, "adjust", job_id, held.period, -delta, delta, 0)


def commit_entry(job_id: str, held: Held, charged: int) -> Entry:
    """The entry charging ``charged`` of a held reservation and returning the rest."""
    charged = min(max(charged, 0), held.credits)
    return Entry(
        held.owner, "commit", job_id, held.period, held.credits - charged, -held.credits, 0
    )


def release_entry(job_id: str, held: Held, note: str) -> Entry:
    """The entry returning everything a reservation holds, its job count included."""
    return Entry(
        held.owner, "release", job_id, held.period, held.credits, -held.credits, -1, note=note
    )


def check_credits(field: str, credits: int, *, minimum: int = 0) -> None:
    """INVALID_ARGUMENT unless ``minimum <= credits <= MAX_CREDITS``."""
    if not minimum <= credits <= MAX_CREDITS:
        raise InvalidArgument(
            field, f"{field} must be between {minimum} and {MAX_CREDITS}, not {credits}"
        )


def refuse_unless_affordable(
    owner: str, balance: Balance, *, credits: int, quota: int | None, charge_credits: bool
) -> None:
    """Raise RESOURCE_EXHAUSTED (QuotaFailure, no RetryInfo: waiting will not help before
    the period resets) when ``balance`` has no job of ``quota`` or not ``credits`` left."""
    if quota is not None and balance.jobs_used >= quota:
        raise ResourceExhausted(
            f"the monthly quota of {quota} jobs is used up; it resets at the start "
            "of next month, or ask for a larger plan",
            violations=[QuotaViolation(f"{owner}:monthly_jobs", f"{quota} jobs per month")],
            reason="MONTHLY_QUOTA_EXHAUSTED",
        )
    if charge_credits and balance.available < credits:
        raise ResourceExhausted(
            f"this job costs {credits} credits but only {balance.available} are "
            "available; buy or ask for more credits",
            violations=[
                QuotaViolation(
                    f"{owner}:credits", f"needs {credits} credits, {balance.available} available"
                )
            ],
            reason="INSUFFICIENT_CREDITS",
        )
