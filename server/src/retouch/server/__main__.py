"""``retouch-server``: run the service until SIGINT or SIGTERM, then stop gracefully;
``retouch-server migrate`` brings the database's schema up to date and exits.

Exit status: 0 after a clean stop (or a valid ``check-config``), 1 when the server could
not start for another reason, 2 for an invalid configuration, 3 when the listening
address is already in use.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from dataclasses import replace
from importlib import metadata
from pathlib import Path

from .app import start_server
from .config import ConfigError, ServerConfig, load_config
from .database.backends import open_database
from .database.migrations import MigrationError
from .listen import AddressInUse
from .scheduling.memory import tune_allocator
from .telemetry import configure_logging
from .tls import server_credentials

EXIT_OK = 0
EXIT_START_FAILED = 1
EXIT_BAD_CONFIG = 2
EXIT_ADDRESS_IN_USE = 3

_EPILOG = (
    "exit status: 0 stopped cleanly (or the config is valid), 1 could not start, "
    "2 invalid configuration, 3 listening address already in use"
)


def version() -> str:
    """The installed retouch-server version."""
    try:
        return metadata.version("retouch-server")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="retouch-server",
        description="Run the retouch image-editing gRPC service. With no options it "
        "listens on 127.0.0.1:50051 with embedded state under ./.retouch.",
        epilog=_EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"retouch-server {version()}")
    parser.add_argument("--config", type=Path, help="TOML config file (or $RETOUCH_CONFIG)")
    parser.add_argument("--listen", help="host:port to listen on (overrides the config)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = commands.add_parser(
        "check-config",
        help="validate a config file (with RETOUCH_* overrides) without starting",
        epilog=_EPILOG,
    )
    check.add_argument("file", type=Path, help="the TOML config file to check")
    commands.add_parser(
        "migrate",
        help="apply the database's schema migrations and exit "
        "(the server also applies them when it starts)",
        epilog=_EPILOG,
    )
    args = parser.parse_args(argv)
    if args.command == "check-config":
        return _check_config(args.file)
    try:
        config = load_config(args.config)
        if args.listen:
            config = replace(config, listen=args.listen)
    except ConfigError as exc:
        print(f"retouch-server: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    configure_logging(config.log_level)
    try:
        asyncio.run(_migrate(config) if args.command == "migrate" else _serve(config))
    except ConfigError as exc:  # an OTEL_* setting retouch cannot honour
        print(f"retouch-server: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except AddressInUse as exc:
        print(f"retouch-server: {exc.strerror}", file=sys.stderr)
        return EXIT_ADDRESS_IN_USE
    except OSError as exc:
        print(f"retouch-server: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_START_FAILED
    except MigrationError as exc:
        print(f"retouch-server: {exc}", file=sys.stderr)
        return EXIT_START_FAILED
    return EXIT_OK


def _check_config(path: Path) -> int:
    try:
        config = load_config(path)
        server_credentials(config)
    except ConfigError as exc:
        print(f"retouch-server: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    transport = "TLS" if config.tls else "plaintext"
    if config.tls_terminated_upstream and not config.tls:
        transport = "plaintext behind a proxy that terminates TLS"
    if config.tls_client_ca_file:
        transport = "mutual TLS"
    print(
        f"{path}: valid ({config.environment} environment, {transport} on {config.listen}, "
        f"{len(config.tenants)} tenant(s), plans: {', '.join(sorted(config.plans.plans))})"
    )
    return EXIT_OK


async def _migrate(config: ServerConfig) -> None:
    database = await open_database(config.database_url, pool_size=1)
    await database.close()
    applied = ", ".join(f"{v:04d}" for v in database.migrated) or "none needed"
    print(f"retouch-server: {database.dialect} schema migrations applied: {applied}")


async def _serve(config: ServerConfig) -> None:
    tune_allocator()
    server = await start_server(config)
    # What start-up made (modules, config, the app) lives as long as the process: out
    # of the collector's reach, a full collection no longer walks it while every
    # stream waits (tens of milliseconds on this heap).
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logging.getLogger("retouch.server").info("stopping: finishing running jobs")
    await server.stop()


if __name__ == "__main__":
    sys.exit(main())
