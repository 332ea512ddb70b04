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
from dataclasses import dataclass
from pathlib import Path

from retouch.server.config import DEV_API_KEY, hash_key

ROOT = Path(__file__).resolve().parent.parent
METADATA = (("authorization", f"Bearer {DEV_API_KEY}"), ("x-retouch-subject", "user:bench"))
"""Call metadata for the retouch server: the development key and a subject."""
_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
_IMPORTED = re.compile(r"^bench\.launch: (\S+) from (.+)$")
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


@dataclass(frozen=True, slots=True)
class Source:
    """The code a bench server runs: the working tree, or an earlier revision's
    extracted under ``root`` (:func:`bench.baseline.checkout`)."""

    label: str
    root: Path
    """Every ``retouch.*`` module the server imports must come from under here."""
    src_dirs: tuple[Path, ...] = ()
    """Put first on ``PYTHONPATH``; the working tree needs none, the venv installs it."""
    disabled_providers: tuple[str, ...] = ()
    """Plugins the venv registers that this code does not have."""


@contextmanager
def retouch_server(
    data_dir: Path,
    settings: str = "",
    pids: list[int] | None = None,
    *,
    source: Source | None = None,
    tables: str = "",
) -> Iterator[int]:
    """``python -m retouch.server`` with :data:`BENCH_CONFIG` and state in ``data_dir``;
    ``settings`` are top-level TOML lines put before it (``database = "…"``), ``tables``
    more TOML tables put after it (another ``[[tenants]]``).

    With a ``source`` the server runs that code, through :mod:`bench.launch`, and is
    refused unless its modules were imported from under ``source.root``.

    Yields the port it listens on; its process id is appended to ``pids`` when given.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "bench.toml"
    env = {
        "RETOUCH_CONFIG": str(config),
        "RETOUCH_DATA_DIR": str(data_dir),
        "RETOUCH_LISTEN": "127.0.0.1:0",
    }
    args = ["-m", "retouch.server"]
    if source is not None:
        args = ["-m", "bench.launch"]
        if source.disabled_providers:
            settings += f"\ndisabled_providers = {list(source.disabled_providers)!r}\n"
        if source.src_dirs:
            inherited = [os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []
            env["PYTHONPATH"] = os.pathsep.join([*map(str, source.src_dirs), *inherited])
    config.write_text(f"{settings}\n{BENCH_CONFIG}\n{tables}")
    expected_root = None if source is None else source.root
    with _serving(args, env, pids, expected_root) as port:
        yield port


@contextmanager
def echo_server(replies: int, last_reply_bytes: int) -> Iterator[int]:
    """``python -m bench.echo_server`` shaped like a job's stream; yields its port."""
    args = ["-m", "bench.echo_server", f"--replies={replies}", f"--last-reply={last_reply_bytes}"]
    with _serving(args, {}) as port:
        yield port


@contextmanager
def _serving(
    args: list[str],
    env: Mapping[str, str],
    pids: list[int] | None = None,
    expected_root: Path | None = None,
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
    imported: dict[str, Path] = {}
    try:
        port = _port_from_log(process, log, imported)
        if expected_root is not None:
            _check_imported(imported, expected_root)
        yield port
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


def _port_from_log(
    process: subprocess.Popen[str], log: deque[str], imported: dict[str, Path]
) -> int:
    stderr = process.stderr
    assert stderr is not None
    for line in stderr:
        log.append(line)
        said = _IMPORTED.match(line.rstrip("\n"))
        if said:
            imported[said.group(1)] = Path(said.group(2))
        found = _LISTENING.search(line)
        if found:
            # Keep draining the log so the server never blocks on a full pipe.
            threading.Thread(target=log.extend, args=(stderr,), daemon=True).start()
            return int(found.group(1))
    raise RuntimeError(
        f"{process.args!r} exited with {process.wait()} before listening:\n{''.join(log)}"
    )


def _check_imported(imported: Mapping[str, Path], root: Path) -> None:
    if not imported:
        raise RuntimeError("the server did not say where its modules were imported from")
    strays = {name: path for name, path in imported.items() if not path.is_relative_to(root)}
    if strays:
        raise RuntimeError(f"the server was to run the code under {root}, but imported {strays}")
