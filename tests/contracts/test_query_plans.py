"""Lookups by request_id use their partial unique indexes on every backend.

Those indexes only cover non-empty request_ids; a query that does not repeat that
predicate cannot use them, and scans every row of the owner's instead — a cost that
grows with each job an owner ever ran, paid on every submission.
"""

from __future__ import annotations

import sqlite3

import asyncpg
import pytest

from retouch.server.jobs import postgres_store, sqlite_store
from retouch.server.policy import postgres_ledger, sqlite_ledger
from tests.contracts.conftest import Backend

LOOKUPS = {
    "sqlite": [
        (sqlite_store.FIND_BY_REQUEST, "jobs_request"),
        (sqlite_ledger.FIND_GRANT, "ledger_grants"),
    ],
    "postgresql": [
        (postgres_store.FIND_BY_REQUEST, "jobs_request"),
        (postgres_ledger.FIND_GRANT, "ledger_grants"),
    ],
}


async def plan_of(backend: Backend, sql: str) -> str:
    await backend.open()  # applies the migrations
    if backend.name == "sqlite":
        with sqlite3.connect(backend.url.removeprefix("sqlite:///")) as db:
            rows = db.execute(f"EXPLAIN QUERY PLAN {sql}", ("owner", "request")).fetchall()
        return "\n".join(str(row[-1]) for row in rows)
    connection = await asyncpg.connect(backend.url)
    try:
        # The plan a prepared statement settles on whatever values it is given, with
        # sequential scans priced out so the choice is between the indexes alone.
        await connection.execute("SET plan_cache_mode = force_generic_plan")
        await connection.execute("SET enable_seqscan = off")
        await connection.execute(f"PREPARE lookup (text, text) AS {sql}")
        rows = await connection.fetch("EXPLAIN EXECUTE lookup ('owner', 'request')")
        return "\n".join(str(row[0]) for row in rows)
    finally:
        await connection.close()


@pytest.mark.parametrize("lookup", [0, 1], ids=["job by request_id", "grant by request_id"])
async def test_lookups_by_request_id_use_their_index(backend: Backend, lookup: int) -> None:
    sql, index = LOOKUPS[backend.name][lookup]
    plan = await plan_of(backend, sql)
    assert index in plan, plan
