"""Choosing the database by URL: :func:`open_database` connects, applies the shipped
schema migrations, and returns the :class:`Database` with its job store and ledger,
typed by their interfaces. asyncpg and the PostgreSQL classes are imported only for a
``postgresql://`` URL: the embedded defaults never load them."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from ..jobs.sqlite_store import SqliteJobStore
from ..jobs.store import JobStore
from ..policy.ledger import Ledger
from ..policy.sqlite_ledger import SqliteLedger
from .migrations import migrate_sqlite
from .sqlite import connect_sqlite
from .urls import Dialect, dialect_of, sqlite_path

DEFAULT_TIMEOUT_S = 4.0
"""Bound on each call to PostgreSQL (``database_timeout_s``), waiting for a connection
and connecting included: a hung database fails the call UNAVAILABLE within it instead of
holding it for the whole outage. Our statements take milliseconds; this is for outages."""


class DatabaseUnavailable(OSError):
    """The database cannot be reached or refused the connection; the message says which."""


@dataclass(frozen=True, slots=True)
class Database:
    """An open database: the job store, the ledger that shares its connections, and the
    migrations applied when it was opened."""

    dialect: Dialect
    jobs: JobStore
    ledger: Ledger
    migrated: tuple[int, ...] = ()

    async def close(self) -> None:
        await self.jobs.close()  # the store owns the connections the ledger borrows


async def open_database(
    url: str, *, pool_size: int = 10, timeout_s: float = DEFAULT_TIMEOUT_S
) -> Database:
    """Connect to the database at ``url`` and bring its schema up to date. For
    PostgreSQL, each later call is bounded by ``timeout_s``: past it, or when the database
    cannot be reached, the call fails UNAVAILABLE (reason ``DATABASE_UNAVAILABLE``)."""
    if dialect_of(url) == "sqlite":
        connection = connect_sqlite(sqlite_path(url))
        try:
            migrated = migrate_sqlite(connection)
        except BaseException:
            connection.close()
            raise
        store = SqliteJobStore(connection)
        return Database("sqlite", store, SqliteLedger(connection), tuple(migrated))
    import asyncpg

    from ..jobs.postgres_store import PostgresJobStore
    from ..policy.postgres_ledger import PostgresLedger

    try:
        postgres = await PostgresJobStore.open(url, pool_size=pool_size, timeout_s=timeout_s)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DatabaseUnavailable(
            f"cannot open the database {_without_password(url)}: {exc}"
        ) from exc
    return Database("postgresql", postgres, PostgresLedger(postgres.pool), postgres.migrated)


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


__all__ = ["Database", "DatabaseUnavailable", "open_database"]
