"""The embedded ledger, in the same SQLite database as the jobs.

Each move is one ``BEGIN IMMEDIATE`` transaction that never spans an ``await``: it holds
the database's write lock from reading the balance to writing the entry, which is the
account lock :mod:`.ledger` asks for, against every connection to the file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from ..database.sqlite import transaction
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

_EntryOf = Callable[[Held], Entry]
FIND_GRANT = (
    f"SELECT available_delta FROM ledger WHERE owner = ? AND request_id = ? AND {IDEMPOTENT_GRANT}"
)
_INSERT_ENTRY = f"INSERT INTO ledger ({ENTRY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


class SqliteLedger:
    """The embedded ledger (see the module docstring for its atomicity)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        """Use a connection whose database is migrated (``migrate_sqlite``)."""
        self._db = connection

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
        return self._balance(owner, period)

    def _balance(self, owner: str, period: str) -> Balance:
        row = self._db.execute(
            "SELECT (SELECT available FROM accounts WHERE owner = ?1), "
            "(SELECT held FROM accounts WHERE owner = ?1), "
            "(SELECT used FROM quota_usage WHERE owner = ?1 AND period = ?2)",
            (owner, period),
        ).fetchone()
        return Balance(int(row[0] or 0), int(row[1] or 0), int(row[2] or 0))

    async def grant(
        self, owner: str, credits: int, *, request_id: str, note: str, now: float
    ) -> int:
        with transaction(self._db):
            available = self._balance(owner, "").available
            granted = (
                self._db.execute(FIND_GRANT, (owner, request_id)).fetchone() if request_id else None
            )
            if granted is not None:
                same_grant(int(granted[0]), credits)
                return available
            entry = grant_entry(owner, credits, available, request_id=request_id, note=note)
            self._apply(entry, now)
        return available + credits

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
        with transaction(self._db):
            balance = self._balance(owner, period)
            entry = reserve_entry(
                job_id,
                owner,
                balance,
                credits=credits,
                period=period,
                quota=quota,
                charge_credits=charge_credits,
            )
            self._apply(entry, now)
            self._db.execute(
                "INSERT INTO reservations (job_id, owner, period, credits, jobs, state, "
                "created_at) VALUES (?, ?, ?, ?, 1, 'held', ?)",
                (job_id, owner, period, entry.held, now),
            )
        return Balance(
            balance.available - entry.held, balance.held + entry.held, balance.jobs_used + 1
        )

    async def adjust(self, job_id: str, credits: int, *, now: float) -> None:
        with transaction(self._db):
            held = self._held(job_id)
            if held is None:
                return
            entry = adjust_entry(job_id, held, credits, self._balance(held.owner, "").available)
            if entry is None:
                return
            self._apply(entry, now)
            self._db.execute(
                "UPDATE reservations SET credits = ? WHERE job_id = ?", (credits, job_id)
            )

    async def commit(self, job_id: str, charged: int, *, now: float) -> None:
        self._settle(job_id, "committed", lambda held: commit_entry(job_id, held, charged), now)

    async def release(self, job_id: str, *, now: float, note: str) -> bool:
        return self._settle(job_id, "released", lambda held: release_entry(job_id, held, note), now)

    def _settle(self, job_id: str, state: str, entry_of: _EntryOf, now: float) -> bool:
        with transaction(self._db):
            held = self._held(job_id)
            if held is None:
                return False
            self._apply(entry_of(held), now)
            self._db.execute("UPDATE reservations SET state = ? WHERE job_id = ?", (state, job_id))
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

    def _held(self, job_id: str) -> Held | None:
        row = self._db.execute(
            "SELECT owner, period, credits FROM reservations WHERE job_id = ? AND state = 'held'",
            (job_id,),
        ).fetchone()
        return Held(str(row[0]), str(row[1]), int(row[2])) if row else None

    def _apply(self, entry: Entry, now: float) -> None:
        self._db.execute(_INSERT_ENTRY, entry.row(now))
        # Updates first, inserts only for new rows: SQLite checks CHECK constraints on an
        # upsert's proposed row, so "INSERT -1 ON CONFLICT add" would fail on a decrement.
        if entry.available or entry.held:
            moved = self._db.execute(
                "UPDATE accounts SET available = available + ?, held = held + ? WHERE owner = ?",
                (entry.available, entry.held, entry.owner),
            )
            if moved.rowcount == 0:
                self._db.execute(
                    "INSERT INTO accounts (owner, available, held) VALUES (?, ?, ?)",
                    (entry.owner, entry.available, entry.held),
                )
        if entry.jobs:
            counted = self._db.execute(
                "UPDATE quota_usage SET used = used + ? WHERE owner = ? AND period = ?",
                (entry.jobs, entry.owner, entry.period),
            )
            if counted.rowcount == 0:
                self._db.execute(
                    "INSERT INTO quota_usage (owner, period, used) VALUES (?, ?, ?)",
                    (entry.owner, entry.period, entry.jobs),
                )
