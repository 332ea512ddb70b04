"""Real engines the tests start themselves: each in a temporary directory, on a free
loopback port, stopped at the end by its own pid. A missing engine fails the run with
how to install it; it is never skipped."""

from __future__ import annotations

import socket
from typing import NoReturn

import pytest


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def engine_missing(engine: str, how_to_install: str) -> NoReturn:
    """Fail the test run: ``engine`` is needed and not installed."""
    pytest.fail(f"{engine} is needed by these tests and is not installed: {how_to_install}")
