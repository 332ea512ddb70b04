"""Every backend of the database, opened as many times as a test needs: two openings
are two connections (SQLite) or two replicas' pools (PostgreSQL) on one database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from retouch.server.database.backends import Database, open_database
from tests.engines.postgres import PostgresServer

T = TypeVar("T")


@dataclass
class Backend:
    """One database, and every opening of it a test made (closed at the end)."""

    name: str
    url: str
    cross_replica: bool
    """Whether wake-ups reach other openings (PostgreSQL) or stay in one (SQLite)."""
    opened: list[Database] = field(default_factory=list)

    async def open(self) -> Database:
        database = await open_database(self.url, pool_size=4)
        self.opened.append(database)
        return database

    def peer(self, first: T, second: T) -> T:
        """``second`` where wake-ups cross openings, else ``first``."""
        return second if self.cross_replica else first


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        chosen = Backend("sqlite", f"sqlite:///{tmp_path / 'retouch.db'}", cross_replica=False)
    else:
        postgres: PostgresServer = request.getfixturevalue("postgres")
        chosen = Backend("postgresql", postgres.new_database(), cross_replica=True)
    try:
        yield chosen
    finally:
        for database in chosen.opened:
            await database.close()
