"""Servers the bench talks to, each in its own process on a loopback port."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from retouch.server.config import DEV_API_KEY

ROOT = Path(__file__).resolve().parent.parent
METADATA = (("authorization", f"Bearer {DEV_API_KEY}"), ("x-retouch-subject", "user:bench"))
"""Call metadata for the retouch server: the development key and a subject."""
_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
_STOP_TIMEOUT_S = 10.0


@contextmanager
def retouch_server(data_dir: Path) -> Iterator[int]:
    """``python -m retouch.server``, default config, state in ``data_dir``; yields its port."""
    env = {"RETOUCH_DATA_DIR": str(data_dir), "RETOUCH_LISTEN": "127.0.0.1:0"}
    with _serving(["-m", "retouch.server"], env) as port:
        yield port


@contextmanager
def echo_server(replies: int, last_reply_bytes: int) -> Iterator[int]:
    """``python -m bench.echo_server`` shaped like a job's stream; yields its port."""
    args = ["-m", "bench.echo_server", f"--replies={replies}", f"--last-reply={last_reply_bytes}"]
    with _serving(args, {}) as port:
        yield port


@contextmanager
def _serving(args: list[str], env: Mapping[str, str]) -> Iterator[int]:
    process = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield _port_from_log(process)
    finally:
        process.terminate()
        try:
            process.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _port_from_log(process: subprocess.Popen[str]) -> int:
    assert process.stderr is not None
    seen: list[str] = []
    for line in process.stderr:
        seen.append(line)
        found = _LISTENING.search(line)
        if found:
            # Keep draining the log so the server never blocks on a full pipe.
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return int(found.group(1))
    raise RuntimeError(
        f"{process.args!r} exited with {process.wait()} before listening:\n{''.join(seen)}"
    )
