"""Servers the bench talks to, each in its own process on a loopback port."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from retouch.server.config import DEV_API_KEY, hash_key

ROOT = Path(__file__).resolve().parent.parent
METADATA = (("authorization", f"Bearer {DEV_API_KEY}"), ("x-retouch-subject", "user:bench"))
"""Call metadata for the retouch server: the development key and a subject."""
_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
_STOP_TIMEOUT_S = 10.0
_LOG_LINES = 40


BENCH_CONFIG = f"""\
# The defaults, except that the development tenant and its subjects may call as fast
# as the bench does (the default plan allows 20 jobs/s per subject). The token buckets
# are still checked on every call; they just never run dry.
[[tenants]]
name = "dev"
key_sha256 = "{hash_key(DEV_API_KEY)}"
admin = true
default_plan = "bench"
rate_per_s = 1e6
burst = 1000000

[plans.bench]
rate_per_s = 1e6
burst = 1000000
"""


@contextmanager
def retouch_server(
    data_dir: Path,
    settings: str = "",
    pids: list[int] | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[int]:
    """``python -m retouch.server`` with :data:`BENCH_CONFIG` and state in ``data_dir``;
    ``settings`` are top-level TOML lines put before it (``database = "…"``), ``env``
    variables added to its environment.

    Yields the port it listens on; its process id is appended to ``pids`` when given.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "bench.toml"
    config.write_text(f"{settings}\n{BENCH_CONFIG}")
    server_env = {
        **(env or {}),
        "RETOUCH_CONFIG": str(config),
        "RETOUCH_DATA_DIR": str(data_dir),
        "RETOUCH_LISTEN": "127.0.0.1:0",
    }
    with _serving(["-m", "retouch.server"], server_env, pids) as port:
        yield port


@contextmanager
def echo_server(replies: int, last_reply_bytes: int) -> Iterator[int]:
    """``python -m bench.echo_server`` shaped like a job's stream; yields its port."""
    args = ["-m", "bench.echo_server", f"--replies={replies}", f"--last-reply={last_reply_bytes}"]
    with _serving(args, {}) as port:
        yield port


@contextmanager
def _serving(
    args: list[str], env: Mapping[str, str], pids: list[int] | None = None
) -> Iterator[int]:
    process = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if pids is not None:
        pids.append(process.pid)
    log: deque[str] = deque(maxlen=_LOG_LINES)
    try:
        yield _port_from_log(process, log)
    except BaseException:
        # A failed call usually means the server logged why: show it with the error.
        sys.stderr.write(f"last lines logged by {' '.join(args)}:\n{''.join(log)}")
        raise
    finally:
        process.terminate()
        try:
            process.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _port_from_log(process: subprocess.Popen[str], log: deque[str]) -> int:
    stderr = process.stderr
    assert stderr is not None
    for line in stderr:
        log.append(line)
        found = _LISTENING.search(line)
        if found:
            # Keep draining the log so the server never blocks on a full pipe.
            threading.Thread(target=log.extend, args=(stderr,), daemon=True).start()
            return int(found.group(1))
    raise RuntimeError(
        f"{process.args!r} exited with {process.wait()} before listening:\n{''.join(log)}"
    )
