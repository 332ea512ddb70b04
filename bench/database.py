"""Database bench: what one call costs on SQLite and on PostgreSQL (asyncpg, loopback).

The issue allowed SQLAlchemy's async core only within 0.2 ms per call of asyncpg; these
are asyncpg's own figures, so that choice can be checked. PostgreSQL is a real server
started for the bench from the machine's binaries (``tests/engines/postgres.py``), with
fsync off, as in the tests: the figures are round trips and query work, not disk.
The policy decision (plan, caps, buckets, route, reserve) is measured again with the
ledger on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path

from retouch.server.database.backends import open_database
from retouch.server.jobs import JobRecord, JobState
from tests.engines.postgres import PostgresServer

from .policy import decisions
from .stats import Summary

CALLS = 1000
WARMUP = 100
SHARED_DECISION_TARGET_MS = 2.0


@dataclass(frozen=True, slots=True)
class DatabaseFigures:
    """Per-call latencies by backend, and the decision on PostgreSQL."""

    calls: dict[str, dict[str, Summary]]
    shared_decision: Summary
    shared_settle: Summary


def _job(index: int) -> JobRecord:
    return JobRecord(
        job_id=f"job_bench{index:06d}",
        owner="dev/user:bench",
        subject="user:bench",
        request_id=f"req{index}",
        fingerprint="f",
        operation="inpaint",
        state=JobState.RUNNING,
        provider="fake",
        model="m",
        seed=1,
        created_at=0.0,
        updated_at=0.0,
    )


async def _per_call(url: str) -> dict[str, Summary]:
    database = await open_database(url, pool_size=4)
    jobs, ledger = database.jobs, database.ledger
    owner = "dev/user:bench"
    await ledger.grant(owner, 10**12, request_id="", note="bench", now=0)
    samples: dict[str, list[float]] = {}

    async def timed(name: str, call: Awaitable[object]) -> None:
        started = time.perf_counter()
        await call
        samples.setdefault(name, []).append((time.perf_counter() - started) * 1000)

    try:
        for index in range(CALLS + WARMUP):
            job = _job(index)
            await timed("create_or_get", jobs.create_or_get(job))
            await timed("get_job", jobs.get_job(job.job_id))
            await timed("append_event", jobs.append_event(job.job_id, 1, b"x" * 64))
            done = dataclasses.replace(job, state=JobState.SUCCEEDED)
            await timed("finish", jobs.finish(done))
            reserve = ledger.reserve(
                job.job_id,
                owner,
                credits=1,
                period="2027-01",
                quota=None,
                charge_credits=True,
                now=0,
            )
            await timed("ledger reserve", reserve)
            await timed("ledger commit", ledger.commit(job.job_id, 1, now=0))
    finally:
        await database.close()
    return {name: Summary.of(values[WARMUP:]) for name, values in samples.items()}


async def run_database_bench() -> DatabaseFigures:
    """Start PostgreSQL, then time each call on both backends and the shared decision."""
    with (
        tempfile.TemporaryDirectory(prefix="retouch-database-bench-") as tmp,
        PostgresServer.running() as postgres,
    ):
        root = Path(tmp)
        calls = {
            "SQLite": await _per_call(f"sqlite:///{root / 'bench.db'}"),
            "PostgreSQL": await _per_call(postgres.new_database()),
        }
        decision, settle = await decisions(root / "decisions", postgres.new_database())
    return DatabaseFigures(calls, decision, settle)


def render_database(figures: DatabaseFigures) -> str:
    """The database section of RESULTS.md."""
    backends = list(figures.calls)
    names = list(figures.calls[backends[0]])
    verdict = "PASS" if figures.shared_decision.p50 <= SHARED_DECISION_TARGET_MS else "MISS"
    lines = [
        "## Database calls (SQLite embedded, PostgreSQL on loopback through asyncpg)",
        "",
        f"{CALLS} calls each after {WARMUP} warm-up, one at a time; p50 / p90 / mean in ms.",
        "",
        "| call | " + " | ".join(backends) + " |",
        "|---|" + "---|" * len(backends),
    ]
    for name in names:
        cells = " | ".join(_ms(figures.calls[b][name]) for b in backends)
        lines.append(f"| {name} | {cells} |")
    lines += [
        "",
        "| figure, ledger on PostgreSQL | p50 / p90 / mean (ms) | target | verdict |",
        "|---|---|---|---|",
        f"| decision: plan, caps, buckets, route, reserve | {_ms(figures.shared_decision)} "
        f"| p50 <= {SHARED_DECISION_TARGET_MS:g} ms | {verdict} |",
        f"| settlement: commit of the charge | {_ms(figures.shared_settle)} | — | — |",
        "",
    ]
    return "\n".join(lines)


def _ms(summary: Summary) -> str:
    return f"{summary.p50:.3f} / {summary.p90:.3f} / {summary.mean:.3f}"


if __name__ == "__main__":
    print(render_database(asyncio.run(run_database_bench())))
