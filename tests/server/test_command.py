"""The ``retouch-server`` command: what an operator sees when it cannot start."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from retouch.server.__main__ import EXIT_ADDRESS_IN_USE


def server_command(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return python_command("-m", "retouch.server", *args, cwd=cwd)


def python_command(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """This Python run with ``args`` in ``cwd``, with no RETOUCH_* or OTEL_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RETOUCH_", "OTEL_"))}
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_port_in_use_is_one_line_and_a_distinct_exit_code(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = server_command("--listen", f"127.0.0.1:{port}", cwd=tmp_path)
    assert done.returncode == EXIT_ADDRESS_IN_USE == 3
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"127.0.0.1:{port}" in lines[0]
    assert "already in use" in lines[0]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / ".retouch").exists(), "nothing is started before the port is had"
