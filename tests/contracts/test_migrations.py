"""Schema migrations: shipped as package files, applied once, at start-up or on demand."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from retouch.server.__main__ import main
from retouch.server.database.backends import DatabaseUnavailable, open_database
from retouch.server.database.migrations import MigrationError, latest_version, migrations
from retouch.server.database.sqlite import connect_sqlite
from retouch.server.jobs import JobState
from tests.contracts.conftest import Backend
from tests.engines import free_port


async def test_a_new_database_gets_every_migration_once(backend: Backend) -> None:
    first = await backend.open()
    assert first.migrated == tuple(range(1, latest_version(first.dialect) + 1))
    assert (await backend.open()).migrated == ()


async def test_replicas_starting_together_apply_each_migration_once(backend: Backend) -> None:
    opened = await asyncio.gather(*(backend.open() for _ in range(4)))
    applied = sorted(v for database in opened for v in database.migrated)
    assert applied == list(range(1, latest_version(opened[0].dialect) + 1))


async def test_a_database_newer_than_this_retouch_is_refused(backend: Backend) -> None:
    database = await backend.open()
    newer = latest_version(database.dialect) + 1
    if database.dialect == "sqlite":
        connect_sqlite(Path(backend.url.removeprefix("sqlite:///"))).execute(
            "INSERT INTO schema_migrations VALUES (?, 'future', 0)", (newer,)
        )
    else:
        import asyncpg

        connection = await asyncpg.connect(backend.url)
        await connection.execute("INSERT INTO schema_migrations VALUES ($1, 'future', 0)", newer)
        await connection.close()
    with pytest.raises(MigrationError, match=f"schema version {newer}"):
        await backend.open()


async def test_an_sqlite_database_from_before_migrations_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = connect_sqlite(path)
    old.executescript(migrations("sqlite")[0].sql)  # what retouch created at start-up
    old.execute(
        "INSERT INTO jobs VALUES ('job_1', 'dev/u', 'u', '', 'f', 'inpaint', 'running', 'p', "
        "'m', 1, 1.0, 1.0, '', '', '', x'', 0, 0)"
    )
    old.execute("INSERT INTO accounts VALUES ('dev/u', 5, 0)")
    old.close()
    database = await open_database(f"sqlite:///{path}")
    try:
        assert database.migrated == (1, 2)  # 0001 adopts the tables it finds
        record = await database.jobs.get_job("job_1")
        assert record is not None
        assert (record.state, record.lease_until, record.cancel_requested) == (
            JobState.RUNNING,
            0.0,
            False,
        )
        assert (await database.ledger.balance("dev/u", "2027-01")).available == 5
    finally:
        await database.close()


def test_retouch_server_migrate_applies_the_schema_and_exits(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RETOUCH_DATABASE", backend.url)
    assert main(["migrate"]) == 0
    assert f"{backend.name} schema migrations applied: 0001, 0002" in capsys.readouterr().out
    assert main(["migrate"]) == 0
    assert "none needed" in capsys.readouterr().out


async def test_an_unreachable_database_is_one_clear_error_without_its_password() -> None:
    url = f"postgresql://retouch:s3cret@127.0.0.1:{free_port()}/retouch"
    with pytest.raises(DatabaseUnavailable, match=r"retouch:\*\*\*@127\.0\.0\.1") as refused:
        await open_database(url)
    assert "s3cret" not in str(refused.value)
