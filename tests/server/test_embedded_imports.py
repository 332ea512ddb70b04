"""The embedded defaults load none of the shared engines' client libraries: a server
on SQLite, the filesystem store and in-process limits never imports asyncpg, Redis or
the AWS SDK (together about 20 MiB of the process and a fifth of its start-up)."""

from __future__ import annotations

from pathlib import Path

from tests.server.test_command import python_command

ENGINE_CLIENTS = ("asyncpg", "redis", "botocore", "aiobotocore")

SERVE_AND_REPORT = f"""
import asyncio, dataclasses, sys
from retouch.server.app import start_server
from retouch.server.config import load_config

async def main() -> None:
    config = dataclasses.replace(load_config(None), listen="127.0.0.1:0")
    server = await start_server(config)
    await server.stop()

asyncio.run(main())
print(",".join(m for m in {ENGINE_CLIENTS!r} if m in sys.modules))
"""


def test_a_server_on_the_embedded_defaults_imports_no_engine_client(tmp_path: Path) -> None:
    done = python_command("-c", SERVE_AND_REPORT, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"imported on embedded defaults: {done.stdout.strip()}"
