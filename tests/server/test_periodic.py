"""The server's periodic loops (lease heartbeat, sweepers): an engine that is down is
said once, not at every turn."""

from __future__ import annotations

import asyncio
import logging

import pytest

from retouch.server.app import run_every
from retouch.server.errors import Unavailable


async def test_a_loop_kept_from_running_by_an_outage_says_so_once_and_when_it_runs_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0
    ran_again = asyncio.Event()

    async def sweep() -> None:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise Unavailable("the database is unreachable", reason="DATABASE_UNAVAILABLE")
        ran_again.set()

    caplog.set_level(logging.INFO, logger="retouch.server")
    loop = asyncio.create_task(run_every(0.0, sweep))
    await ran_again.wait()
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop

    said = [(r.levelname, r.getMessage()) for r in caplog.records if "periodic" in r.getMessage()]
    assert said == [
        ("WARNING", "periodic sweep skipped until it can run again: the database is unreachable"),
        ("INFO", "periodic sweep runs again"),
    ]
    assert not any(r.exc_info for r in caplog.records)
