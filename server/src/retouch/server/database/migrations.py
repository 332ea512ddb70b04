"""Versioned schema migrations, shipped as package files and applied at start-up.

Each dialect has its own folder, ``migrations/<dialect>/NNNN_<name>.sql``, numbered from
0001 without gaps; version N means the same schema in both. A database records what it
has in ``schema_migrations``; :func:`migrate_sqlite` and :func:`migrate_postgres` apply
the missing ones in one transaction under a lock, so replicas starting together apply
each migration exactly once, and a failed migration leaves the schema as it was.
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from .sqlite import transaction
from .urls import Dialect

if TYPE_CHECKING:
    from .postgres import Connection

_FILE_NAME = re.compile(r"^(\d{4})_(\w+)\.sql$")

_POSTGRES_LOCK = 0x7265_746F_7563_68
"""``pg_advisory_xact_lock`` key that serializes migrations ("retouch" in hex)."""


class MigrationError(RuntimeError):
    """The database's schema cannot be brought to this version of retouch."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema change: its version, name and SQL."""

    version: int
    name: str
    sql: str


def migrations(dialect: Dialect) -> list[Migration]:
    """The shipped migrations for ``dialect``, oldest first."""
    folder = resources.files(__package__).joinpath("migrations", dialect)
    found = []
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise MigrationError(f"the {dialect} migrations are not numbered 0001, 0002, …")
    return found


def latest_version(dialect: Dialect) -> int:
    """The schema version this retouch expects."""
    return len(migrations(dialect))


_CREATE_SQLITE_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
)

_CREATE_POSTGRES_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
)


def migrate_sqlite(db: sqlite3.Connection) -> list[int]:
    """Apply the missing migrations to a SQLite database; returns the versions applied."""
    pending = migrations("sqlite")
    with transaction(db):
        db.execute(_CREATE_SQLITE_TABLE)
        have = {int(row[0]) for row in db.execute("SELECT version FROM schema_migrations")}
        _refuse_newer(have, len(pending))
        applied = []
        for migration in pending:
            if migration.version in have:
                continue
            # executescript would COMMIT first; one statement at a time keeps the lock.
            for statement in _sqlite_statements(migration.sql):
                db.execute(statement)
            db.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, time.time()),
            )
            applied.append(migration.version)
    return applied


async def migrate_postgres(connection: Connection) -> list[int]:
    """Apply the missing migrations to a PostgreSQL database; returns the versions applied."""
    pending = migrations("postgresql")
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _POSTGRES_LOCK)
        await connection.execute(_CREATE_POSTGRES_TABLE)
        have = {int(r[0]) for r in await connection.fetch("SELECT version FROM schema_migrations")}
        _refuse_newer(have, len(pending))
        applied = []
        for migration in pending:
            if migration.version in have:
                continue
            await connection.execute(migration.sql)
            await connection.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                time.time(),
            )
            applied.append(migration.version)
    return applied


def _refuse_newer(have: set[int], known: int) -> None:
    newer = sorted(v for v in have if v > known)
    if newer:
        raise MigrationError(
            f"the database has schema version {newer[-1]}, newer than this retouch knows "
            f"({known}); run the newer retouch, or restore a matching backup"
        )


def _sqlite_statements(script: str) -> list[str]:
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip() and not all(
        line.strip().startswith("--") or not line.strip() for line in current.splitlines()
    ):
        raise MigrationError(f"incomplete SQL statement in a migration: {current.strip()!r}")
    return statements
