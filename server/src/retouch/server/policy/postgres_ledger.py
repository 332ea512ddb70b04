"""The shared ledger, in PostgreSQL.

Each move is one READ COMMITTED transaction that first locks the rows it will change —
the reservation, then the subject's account, then its quota count, always in that order
so two moves never deadlock — and computes the entry from what it read under those
locks. A concurrent move on the same subject waits for the lock and then reads the
committed result, so reserves never overspend and a reservation settles once. The
transaction is retried if PostgreSQL aborts it anyway (``in_transaction``).
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

from ..database.postgres import Connection, in_transaction
from .ledger import (
    ENTRY_COLUMNS,
    Balance,
    Entry,
    Held,
    Reservation,
    adjust_entry,
    commit_entry,
    grant_entry,
    release_entry,
    reserve_entry,
)

# INSERT … ON CONFLICT DO UPDATE creates a missing row and, like SELECT … FOR UPDATE,
# locks an existing one and returns its latest committed values: one round trip.
_LOCK_ACCOUNT = (
    "INSERT INTO accounts AS a (owner, available, held) VALUES ($1, 0, 0) "
    "ON CONFLICT (owner) DO UPDATE SET owner = a.owner RETURNING available, held"
)
_LOCK_QUOTA = (
    "INSERT INTO quota_usage AS q (owner, period, used) VALUES ($1, $2, 0) "
    "ON CONFLICT (owner, period) DO UPDATE SET owner = q.owner RETURNING used"
)
_LOCK_HELD = (
    "SELECT owner, period, credits FROM reservations WHERE job_id = $1 AND state = 'held' "
    "FOR UPDATE"
)


class PostgresLedger:
    """The shared ledger (see the module docstring for its atomicity)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        """Use ``pool`` (owned by the job store) on a migrated database."""
        self._pool = pool

    async def plan_of(self, owner: str) -> str | None:
        plan = await self._pool.fetchval("SELECT plan FROM subjects WHERE owner = $1", owner)
        return None if plan is None else str(plan)

    async def set_plan(self, owner: str, plan: str, now: float) -> None:
        await self._pool.execute(
            "INSERT INTO subjects (owner, plan, updated_at) VALUES ($1, $2, $3) "
            "ON CONFLICT (owner) DO UPDATE SET plan = excluded.plan, "
            "updated_at = excluded.updated_at",
            owner,
            plan,
            now,
        )

    async def balance(self, owner: str, period: str) -> Balance:
        row = await self._pool.fetchrow(
            "SELECT (SELECT available FROM accounts WHERE owner = $1), "
            "(SELECT held FROM accounts WHERE owner = $1), "
            "(SELECT used FROM quota_usage WHERE owner = $1 AND period = $2)",
            owner,
            period,
        )
        assert row is not None
        return Balance(int(row[0] or 0), int(row[1] or 0), int(row[2] or 0))

    async def grant(
        self, owner: str, credits: int, *, request_id: str, note: str, now: float
    ) -> int:
        async def work(db: Connection) -> int:
            available = int((await _fetchrow(db, _LOCK_ACCOUNT, owner))[0])
            if request_id and await db.fetchval(
                "SELECT 1 FROM ledger WHERE owner = $1 AND kind = 'grant' AND request_id = $2",
                owner,
                request_id,
            ):
                return available
            await _apply(
                db, grant_entry(owner, credits, available, request_id=request_id, note=note), now
            )
            return available + credits

        return await in_transaction(self._pool, work)

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
        async def work(db: Connection) -> Balance:
            available, held = await _fetchrow(db, _LOCK_ACCOUNT, owner)
            used = int((await _fetchrow(db, _LOCK_QUOTA, owner, period))[0])
            balance = Balance(int(available), int(held), used)
            entry = reserve_entry(
                job_id,
                owner,
                balance,
                credits=credits,
                period=period,
                quota=quota,
                charge_credits=charge_credits,
            )
            await _apply(db, entry, now)
            await db.execute(
                "INSERT INTO reservations (job_id, owner, period, credits, jobs, state, "
                "created_at) VALUES ($1, $2, $3, $4, 1, 'held', $5)",
                job_id,
                owner,
                period,
                entry.held,
                now,
            )
            return Balance(
                balance.available - entry.held, balance.held + entry.held, balance.jobs_used + 1
            )

        return await in_transaction(self._pool, work)

    async def adjust(self, job_id: str, credits: int, *, now: float) -> None:
        async def work(db: Connection) -> None:
            held = await _lock_held(db, job_id)
            if held is None:
                return
            available = int((await _fetchrow(db, _LOCK_ACCOUNT, held.owner))[0])
            entry = adjust_entry(job_id, held, credits, available)
            if entry is None:
                return
            await _apply(db, entry, now)
            await db.execute(
                "UPDATE reservations SET credits = $2 WHERE job_id = $1", job_id, credits
            )

        await in_transaction(self._pool, work)

    async def commit(self, job_id: str, charged: int, *, now: float) -> None:
        await self._settle(
            job_id, "committed", lambda held: commit_entry(job_id, held, charged), now
        )

    async def release(self, job_id: str, *, now: float, note: str) -> bool:
        return await self._settle(
            job_id, "released", lambda held: release_entry(job_id, held, note), now
        )

    async def _settle(
        self, job_id: str, state: str, entry_of: Callable[[Held], Entry], now: float
    ) -> bool:
        async def work(db: Connection) -> bool:
            held = await _lock_held(db, job_id)
            if held is None:
                return False
            await _fetchrow(db, _LOCK_ACCOUNT, held.owner)
            await _apply(db, entry_of(held), now)
            await db.execute("UPDATE reservations SET state = $2 WHERE job_id = $1", job_id, state)
            return True

        return await in_transaction(self._pool, work)

    async def held_reservations(self) -> list[Reservation]:
        rows = await self._pool.fetch(
            "SELECT job_id, owner, credits, period, created_at FROM reservations "
            "WHERE state = 'held'"
        )
        return [Reservation(str(r[0]), str(r[1]), int(r[2]), str(r[3]), float(r[4])) for r in rows]

    async def audit(self, owner: str) -> bool:
        # One statement sees one snapshot, so a move committing meanwhile cannot split it.
        row = await self._pool.fetchrow(
            "SELECT "
            "(SELECT COALESCE(SUM(available_delta), 0) FROM ledger WHERE owner = $1) = "
            "COALESCE((SELECT available FROM accounts WHERE owner = $1), 0) "
            "AND (SELECT COALESCE(SUM(held_delta), 0) FROM ledger WHERE owner = $1) = "
            "COALESCE((SELECT held FROM accounts WHERE owner = $1), 0) "
            "AND NOT EXISTS (SELECT 1 FROM quota_usage q WHERE q.owner = $1 AND q.used <> "
            "(SELECT COALESCE(SUM(jobs_delta), 0) FROM ledger l "
            "WHERE l.owner = q.owner AND l.period = q.period))",
            owner,
        )
        assert row is not None
        return bool(row[0])


async def _fetchrow(db: Connection, sql: str, *args: object) -> asyncpg.Record:
    row = await db.fetchrow(sql, *args)
    assert row is not None  # the locking upserts always return their row
    return row


async def _lock_held(db: Connection, job_id: str) -> Held | None:
    row = await db.fetchrow(_LOCK_HELD, job_id)
    return Held(str(row[0]), str(row[1]), int(row[2])) if row else None


async def _apply(db: Connection, entry: Entry, now: float) -> None:
    """Append ``entry`` and move the balances by it; the caller holds the account's lock,
    so its row exists."""
    await db.execute(
        f"INSERT INTO ledger ({ENTRY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        *entry.row(now),
    )
    if entry.available or entry.held:
        await db.execute(
            "UPDATE accounts SET available = available + $2, held = held + $3 WHERE owner = $1",
            entry.owner,
            entry.available,
            entry.held,
        )
    if entry.jobs:
        # The row exists: reserve's lock created it, and release follows a reserve.
        await db.execute(
            "UPDATE quota_usage SET used = used + $3 WHERE owner = $1 AND period = $2",
            entry.owner,
            entry.period,
            entry.jobs,
        )
