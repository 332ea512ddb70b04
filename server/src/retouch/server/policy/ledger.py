"""The credit and quota ledger: append-only entries, with balances kept beside them.

Every change is one entry of deltas — to available credits, held (reserved) credits
and counted jobs — written in the same transaction as the balances it moves, so the
balances always equal the sums of the entries (``audit`` checks that). A job's money
moves in two steps: ``reserve`` before the provider runs, then exactly one of
``commit`` (charge the actual cost, return the rest) or ``release`` (return it all).
Balances can never go negative: the schema refuses it, and ``reserve`` checks first.
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from ..errors import InvalidArgument, QuotaViolation, ResourceExhausted
from ..jobs.store import transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS subjects (
    owner TEXT PRIMARY KEY,
    plan TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    owner TEXT PRIMARY KEY,
    available INTEGER NOT NULL CHECK (available >= 0),
    held INTEGER NOT NULL CHECK (held >= 0)
);
CREATE TABLE IF NOT EXISTS quota_usage (
    owner TEXT NOT NULL,
    period TEXT NOT NULL,
    used INTEGER NOT NULL CHECK (used >= 0),
    PRIMARY KEY (owner, period)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reservations (
    job_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    period TEXT NOT NULL,
    credits INTEGER NOT NULL,
    jobs INTEGER NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS reservations_held ON reservations (state) WHERE state = 'held';
CREATE TABLE IF NOT EXISTS ledger (
    entry_id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL,
    kind TEXT NOT NULL,
    job_id TEXT NOT NULL,
    period TEXT NOT NULL,
    available_delta INTEGER NOT NULL,
    held_delta INTEGER NOT NULL,
    jobs_delta INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    note TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_owner ON ledger (owner);
CREATE UNIQUE INDEX IF NOT EXISTS ledger_grants
    ON ledger (owner, request_id) WHERE kind = 'grant' AND request_id != '';
"""


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
        """Add credits; a repeated ``request_id`` grants once. Returns the balance."""

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
        """Hold one job of quota and ``credits``, or raise RESOURCE_EXHAUSTED."""

    async def adjust(self, job_id: str, credits: int, *, now: float) -> None:
        """Change a held reservation to ``credits`` (a fallback provider's price)."""

    async def commit(self, job_id: str, charged: int, *, now: float) -> None:
        """Charge ``charged`` (at most what is held) and return the rest."""

    async def release(self, job_id: str, *, now: float, note: str) -> bool:
        """Return everything a held reservation holds; False if none was held."""

    async def held_reservations(self) -> list[Reservation]: ...

    async def audit(self, owner: str) -> bool:
        """Whether the balances equal the sums of the ledger entries."""


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


class SqliteLedger:
    """The embedded ledger, in the same SQLite database as the jobs."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._db.executescript(_SCHEMA)

    async def plan_of(self, owner: str) -> str | None:
        row = self._db.execute("SELECT plan FROM subjects WHERE owner = ?", (owner,)).fetchone()
        return str(row[0]) if row else None

    async def set_plan(self, owner: str, plan: str, now: float) -> None:
        self._db.execute(
            "INSERT INTO subjects (owner, plan, updated_at) VALUES (?, ?, ?) ON CONFLICT (owner) "
            "DO UPDATE SET plan = excluded.plan, updated_at = excluded.updated_at",
            (owner, plan, now),
        )

    async def balance(self, owner: str, period: str) -> Balance:
        account = self._db.execute(
            "SELECT available, held FROM accounts WHERE owner = ?", (owner,)
        ).fetchone()
        used = self._db.execute(
            "SELECT used FROM quota_usage WHERE owner = ? AND period = ?", (owner, period)
        ).fetchone()
        available, held = account if account else (0, 0)
        return Balance(int(available), int(held), int(used[0]) if used else 0)

    async def grant(
        self, owner: str, credits: int, *, request_id: str, note: str, now: float
    ) -> int:
        if credits <= 0:
            raise InvalidArgument("credits", "credits to grant must be positive")
        with self._transaction():
            if (
                request_id
                and self._db.execute(
                    "SELECT 1 FROM ledger WHERE owner = ? AND kind = 'grant' AND request_id = ?",
                    (owner, request_id),
                ).fetchone()
            ):
                return await self._available(owner)
            self._entry(owner, "grant", "", "", credits, 0, 0, request_id, note, now)
            self._move(owner, credits, 0)
        return await self._available(owner)

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
        with self._transaction():
            balance = await self.balance(owner, period)
            refuse_unless_affordable(
                owner, balance, credits=credits, quota=quota, charge_credits=charge_credits
            )
            held = credits if charge_credits else 0
            self._entry(owner, "reserve", job_id, period, -held, held, 1, "", "", now)
            self._move(owner, -held, held)
            self._count(owner, period, 1)
            self._db.execute(
                "INSERT INTO reservations (job_id, owner, period, credits, jobs, state, "
                "created_at) VALUES (?, ?, ?, ?, 1, 'held', ?)",
                (job_id, owner, period, held, now),
            )
        return Balance(balance.available - held, balance.held + held, balance.jobs_used + 1)

    async def adjust(self, job_id: str, credits: int, *, now: float) -> None:
        with self._transaction():
            held = self._held(job_id)
            if held is None:
                return
            owner, period, current = held
            if current == 0 or credits == current:
                return
            delta = credits - current
            available = await self._available(owner)
            if delta > available:
                raise ResourceExhausted(
                    f"the fallback provider costs {credits} credits; only "
                    f"{available + current} are available",
                    violations=[QuotaViolation(f"{owner}:credits", "not enough credits")],
                    reason="INSUFFICIENT_CREDITS",
                )
            self._entry(owner, "adjust", job_id, period, -delta, delta, 0, "", "", now)
            self._move(owner, -delta, delta)
            self._db.execute(
                "UPDATE reservations SET credits = ? WHERE job_id = ?", (credits, job_id)
            )

    async def commit(self, job_id: str, charged: int, *, now: float) -> None:
        with self._transaction():
            held = self._held(job_id)
            if held is None:
                return
            owner, period, credits = held
            charged = min(charged, credits)
            returned = credits - charged
            self._entry(owner, "commit", job_id, period, returned, -credits, 0, "", "", now)
            self._move(owner, returned, -credits)
            self._db.execute(
                "UPDATE reservations SET state = 'committed' WHERE job_id = ?", (job_id,)
            )

    async def release(self, job_id: str, *, now: float, note: str) -> bool:
        with self._transaction():
            held = self._held(job_id)
            if held is None:
                return False
            owner, period, credits = held
            self._entry(owner, "release", job_id, period, credits, -credits, -1, "", note, now)
            self._move(owner, credits, -credits)
            self._count(owner, period, -1)
            self._db.execute(
                "UPDATE reservations SET state = 'released' WHERE job_id = ?", (job_id,)
            )
        return True

    async def held_reservations(self) -> list[Reservation]:
        rows = self._db.execute(
            "SELECT job_id, owner, credits, period, created_at FROM reservations "
            "WHERE state = 'held'"
        )
        return [Reservation(str(r[0]), str(r[1]), int(r[2]), str(r[3]), float(r[4])) for r in rows]

    async def audit(self, owner: str) -> bool:
        sums = self._db.execute(
            "SELECT COALESCE(SUM(available_delta), 0), COALESCE(SUM(held_delta), 0) "
            "FROM ledger WHERE owner = ?",
            (owner,),
        ).fetchone()
        account = self._db.execute(
            "SELECT available, held FROM accounts WHERE owner = ?", (owner,)
        ).fetchone() or (0, 0)
        periods = self._db.execute(
            "SELECT q.used, COALESCE((SELECT SUM(jobs_delta) FROM ledger l "
            "WHERE l.owner = q.owner AND l.period = q.period), 0) "
            "FROM quota_usage q WHERE q.owner = ?",
            (owner,),
        ).fetchall()
        return tuple(sums) == tuple(account) and all(used == total for used, total in periods)

    def _transaction(self) -> AbstractContextManager[None]:
        return transaction(self._db)

    def _held(self, job_id: str) -> tuple[str, str, int] | None:
        row = self._db.execute(
            "SELECT owner, period, credits FROM reservations WHERE job_id = ? AND state = 'held'",
            (job_id,),
        ).fetchone()
        return (str(row[0]), str(row[1]), int(row[2])) if row else None

    async def _available(self, owner: str) -> int:
        row = self._db.execute(
            "SELECT available FROM accounts WHERE owner = ?", (owner,)
        ).fetchone()
        return int(row[0]) if row else 0

    # Updates first, inserts only for new rows: SQLite checks CHECK constraints on an
    # upsert's proposed row, so "INSERT -1 ON CONFLICT add" would fail on a decrement.

    def _move(self, owner: str, available: int, held: int) -> None:
        updated = self._db.execute(
            "UPDATE accounts SET available = available + ?, held = held + ? WHERE owner = ?",
            (available, held, owner),
        )
        if updated.rowcount == 0:
            self._db.execute(
                "INSERT INTO accounts (owner, available, held) VALUES (?, ?, ?)",
                (owner, available, held),
            )

    def _count(self, owner: str, period: str, jobs: int) -> None:
        updated = self._db.execute(
            "UPDATE quota_usage SET used = used + ? WHERE owner = ? AND period = ?",
            (jobs, owner, period),
        )
        if updated.rowcount == 0:
            self._db.execute(
                "INSERT INTO quota_usage (owner, period, used) VALUES (?, ?, ?)",
                (owner, period, jobs),
            )

    def _entry(
        self,
        owner: str,
        kind: str,
        job_id: str,
        period: str,
        available: int,
        held: int,
        jobs: int,
        request_id: str,
        note: str,
        now: float,
    ) -> None:
        self._db.execute(
            "INSERT INTO ledger (owner, kind, job_id, period, available_delta, held_delta, "
            "jobs_delta, request_id, note, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (owner, kind, job_id, period, available, held, jobs, request_id, note, now),
        )
