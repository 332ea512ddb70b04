"""A real PostgreSQL server for the tests, from the machine's server binaries.

``initdb`` into a temporary directory, ``pg_ctl start`` on a free loopback port, one
fresh database per test, ``pg_ctl stop`` at the end. PostgreSQL refuses to run as root,
so as root (CI) the server runs as the ``postgres`` user, in a directory it owns.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from . import engine_missing, free_port

INSTALL = (
    "install PostgreSQL's server (Debian/Ubuntu: apt-get install postgresql), "
    "and put its bin directory on PATH if initdb is not found there"
)
_USER = "retouch"


def _bin_dir() -> Path:
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    # Debian keeps the server binaries off PATH, under one directory per major version.
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not versions:
        engine_missing("PostgreSQL", INSTALL)
    return versions[-1].parent


class PostgresServer:
    """One running PostgreSQL cluster; :meth:`new_database` makes a database per test."""

    def __init__(self) -> None:
        self._bin = _bin_dir()
        self._as_root = os.geteuid() == 0
        if self._as_root and shutil.which("runuser") is None:
            engine_missing("runuser (util-linux)", "apt-get install util-linux")
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="retouch-pg-"))
        self._databases = 0

    def _run(self, *command: str) -> None:
        argv = [str(self._bin / command[0]), *command[1:]]
        if self._as_root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log = self._dir / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            pytest.fail(f"{' '.join(command)} failed: {done.stderr or done.stdout}\n{tail}")

    def start(self) -> None:
        if self._as_root:
            try:
                shutil.chown(self._dir, "postgres")
            except LookupError:
                engine_missing("the postgres system user", INSTALL)
        data = self._dir / "data"
        self._run("initdb", "-D", str(data), "-A", "trust", "-U", _USER, "--no-sync")
        # Durability is not under test: without fsync a test database is created in ms.
        options = (
            f"-p {self.port} -k {self._dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=300"
        )
        self._run(
            "pg_ctl", "-D", str(data), "-o", options, "-l", str(self._dir / "log"), "-w", "start"
        )

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "-D", str(self._dir / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self._dir, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{_USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """The URL of a new, empty database."""
        self._databases += 1
        name = f"test_{self._databases}"
        self._run(
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            _USER,
            "-d",
            "postgres",
            "-q",
            "-c",
            f"CREATE DATABASE {name}",
        )
        return self.url(name)

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[PostgresServer]:
        server = cls()
        try:
            server.start()
            yield server
        finally:
            server.stop()


_DROP_LISTENERS = (
    # With a timeout, pg_terminate_backend waits until the backend has exited, so no
    # NOTIFY sent after this returns can reach the dropped connection.
    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000)) FROM pg_stat_activity "
    "WHERE datname = $1 AND pid <> pg_backend_pid() AND query LIKE 'LISTEN%'"
)


def _admin_url(url: str) -> tuple[str, str]:
    """The URL of the cluster's ``postgres`` database, and the name of ``url``'s."""
    parts = urlsplit(url)
    return parts._replace(path="/postgres").geturl(), parts.path.lstrip("/")


async def drop_listeners(url: str) -> int:
    """Terminate every LISTEN connection to ``url``'s database, as a network fault or a
    database restart would; returns how many were dropped. They may reconnect at once."""
    admin_url, database = _admin_url(url)
    admin = await asyncpg.connect(admin_url)
    try:
        return int(await admin.fetchval(_DROP_LISTENERS, database))
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def listeners_cut(url: str) -> AsyncIterator[int]:
    """Drop every LISTEN connection to ``url``'s database and let no new connection in
    until the block ends, so the listeners stay down while it runs; connections already
    open (the pools') keep working. Yields how many were dropped."""
    admin_url, database = _admin_url(url)
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        try:
            yield int(await admin.fetchval(_DROP_LISTENERS, database))
        finally:
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
    finally:
        await admin.close()
