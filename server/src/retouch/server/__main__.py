"""``retouch-server``: run the service until SIGINT or SIGTERM, then stop gracefully;
``retouch-server migrate`` brings the database's schema up to date and exits."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from dataclasses import replace
from pathlib import Path

from .app import start_server
from .config import ConfigError, ServerConfig, load_config
from .database.backends import open_database
from .database.migrations import MigrationError
from .telemetry import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="retouch-server",
        description="Run the retouch image-editing gRPC service. With no options it "
        "listens on 127.0.0.1:50051 with embedded state under ./.retouch.",
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=("serve", "migrate"),
        default="serve",
        help="serve (the default), or migrate: apply the database's schema migrations "
        "and exit (the server also applies them when it starts)",
    )
    parser.add_argument("--config", type=Path, help="TOML config file (or $RETOUCH_CONFIG)")
    parser.add_argument("--listen", help="host:port to listen on (overrides the config)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"retouch-server: {exc}", file=sys.stderr)
        return 2
    if args.listen:
        config = replace(config, listen=args.listen)
    configure_logging(config.log_level)
    try:
        asyncio.run(_migrate(config) if args.command == "migrate" else _serve(config))
    except ConfigError as exc:  # an OTEL_* setting retouch cannot honour
        print(f"retouch-server: {exc}", file=sys.stderr)
        return 2
    except (OSError, MigrationError) as exc:
        print(f"retouch-server: {exc}", file=sys.stderr)
        return 1
    return 0


async def _migrate(config: ServerConfig) -> None:
    database = await open_database(config.database_url, pool_size=1)
    await database.close()
    applied = ", ".join(f"{v:04d}" for v in database.migrated) or "none needed"
    print(f"retouch-server: {database.dialect} schema migrations applied: {applied}")


async def _serve(config: ServerConfig) -> None:
    server = await start_server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logging.getLogger("retouch.server").info("stopping: finishing running jobs")
    await server.stop()


if __name__ == "__main__":
    sys.exit(main())
