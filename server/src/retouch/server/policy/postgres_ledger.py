"""The shared ledger, in PostgreSQL.

Each move is one READ COMMITTED transaction of two statements: the first locks the rows
the move will change — the reservation with its subject's account, or the account with
its quota count — and reads them; the entry is computed from what was read under those
locks; the second writes the entry, the balances it moves and the reservation's new
state at once. A concurrent move on the same subject waits for the lock and then reads
the committed result, so reserves never overspend and a reservation settles once. Two
statements, not one per row, because each is a round trip and the decision's budget is
counted in them. The transaction is retried if PostgreSQL aborts it
(``BoundedPool.in_transaction``).
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

from ..database.postgres import BoundedPool, Connection
from .ledger import (
    ENTRY_COLUMNS,
    IDEMPOTENT_GRANT,
    Balance,
    Entry,
    Held,
    Reservation,
    adjust_entry,
    commit_entry,
    grant_entry,
    release_entry,
    reserve_entry,
    same_grant,
)

FIND_GRANT = (
    "SELECT available_delta FROM ledger "
    f"WHERE owner = $1 AND request_id = $2 AND {IDEMPOTENT_GRANT}"
)

# INSERT … ON CONFLICT DO UPDATE creates a missing row and, like SELECT … FOR UPDATE,
# locks an existing one and returns its latest committed values.
_LOCK_ACCOUNT = (
    "INSERT INTO accounts AS a (owner, available, held) VALUES ($1, 0, 0) "
    "ON CONFLICT (owner) DO UPDATE SET owner = a.owner RETURNING available, held"
)
_LOCK_ACCOUNT_AND_QUOTA = (
    f"WITH account AS ({_LOCK_ACCOUNT}), quota AS ("
    "INSERT INTO quota_usage AS q (owner, period, used) VALUES ($1, $2, 0) "
    "ON CONFLICT (owner, period) DO UPDATE SET owner = q.owner RETURNING used) "
    "SELECT account.available, account.held, quota.used FROM account, quota"
)
# FOR UPDATE over a join locks the rows of both tables.
_LOCK_HELD = (
    "SELECT r.owner, r.period, r.credits, a.available FROM reservations r "
    "JOIN accounts a ON a.owner = r.owner WHERE r.job_id = $1 AND r.state = 'held' "
    "FOR UPDATE"
)
# Appends an entry ($1..$10, in ENTRY_COLUMNS order) and moves the balances by it; the
# caller holds the account's lock, so its row exists, and reserve's lock created the
# quota row a release decrements. The main statement, from $11 on, changes the
# reservation.
_WRITE_ENTRY = (
    f"WITH entry AS (INSERT INTO ledger ({ENTRY_COLUMNS}) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)), "
    "account AS (UPDATE accounts SET available = available + $5, held = held + $6 "
    "WHERE owner = $1 AND ($5 <> 0 OR $6 <> 0)), "
    "quota AS (UPDATE quota_usage SET used = used + $7 WHERE owner = $1 AND period = $4 "
    "AND $7 <> 0) "
)
_ENTRY_ONLY = _WRITE_ENTRY + "SELECT 1"
_ENTRY_AND_RESERVATION = (
    _WRITE_ENTRY + "INSERT INTO reservations (job_id, owner, period, credits, jobs, state, "
    "created_at) VALUES ($3, $1, $4, $11, 1, 'held', $10)"
)
_ENTRY_AND_CREDITS = _WRITE_ENTRY + "UPDATE reservations SET credits = $11 WHERE job_id = $3"
_ENTRY_AND_STATE = _WRITE_ENTRY + "UPDATE reservations SET state = $11 WHERE job_id = $3"


class PostgresLedger:
    """The shared ledger (see the module docstring for its atomicity)."""

    def __init__(self, pool: BoundedPool) -> None:
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
            granted = await db.fetchval(FIND_GRANT, owner, request_id) if request_id else None
            if granted is not None:
                same_grant(int(granted), credits)
                return available
            entry = grant_entry(owner, credits, available, request_id=request_id, note=note)
            await db.execute(_ENTRY_ONLY, *entry.row(now))
            return available + credits

        return await self._pool.in_transaction(work)

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
            available, held, used = await _fetchrow(db, _LOCK_ACCOUNT_AND_QUOTA, owner, period)
            balance = Balance(int(available), int(held), int(used))
            entry = reserve_entry(
                job_id,
                owner,
                balance,
                credits=credits,
                period=period,
                quota=quota,
                charge_credits=charge_credits,
            )
            await db.execute(_ENTRY_AND_RESERVATION, *entry.row(now), entry.held)
            return Balance(
                balance.available - entry.held, balance.held + entry.held, balance.jobs_used + 1
            )

        return await self._pool.in_transaction(work)

    async def adjust(self, job_id: str, credits: int, *, now: float) -> None:
        async def work(db: Connection) -> None:
            locked = await _lock_held(db, job_id)
            if locked is None:
                return
            held, available = locked
            entry = adjust_entry(job_id, held, credits, available)
            if entry is not None:
                await db.execute(_ENTRY_AND_CREDITS, *entry.row(now), credits)

        await self._pool.in_transaction(work)

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
            locked = await _lock_held(db, job_id)
            if locked is None:
                return False
            await db.execute(_ENTRY_AND_STATE, *entry_of(locked[0]).row(now), state)
            return True

        return await self._pool.in_transaction(work)

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


async def _lock_held(db: Connection, job_id: str) -> tuple[Held, int] | None:
    """The held reservation and its account's available credits, both locked."""
    row = await db.fetchrow(_LOCK_HELD, job_id)
    return (Held(str(row[0]), str(row[1]), int(row[2])), int(row[3])) if row else None
