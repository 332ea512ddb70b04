"""``make run-replicas``: PostgreSQL, Redis and SeaweedFS on loopback, and two retouch
replicas sharing them, until Ctrl-C.

The engines start exactly as the tests start them (:mod:`tests.engines`), in temporary
directories on free ports, and stop with this script; their state goes with them. The
replicas listen on 127.0.0.1:50051 and 127.0.0.1:50052 (``--ports`` to change) with the
development key, and log to this terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.engines.postgres import PostgresServer  # noqa: E402
from tests.engines.redis import started_redis  # noqa: E402
from tests.engines.seaweed import started_seaweedfs  # noqa: E402

# SeaweedFS takes any key pair; the replicas find these through the AWS chain.
AWS = {"AWS_ACCESS_KEY_ID": "retouch", "AWS_SECRET_ACCESS_KEY": "retouch-secret"}


def shared_settings(database: str, rate_limiter: str, object_store: str) -> str:
    """The config both replicas run with: the three engines, named by URL."""
    return (
        f'database = "{database}"\n'
        f'rate_limiter = "{rate_limiter}"\n'
        f'object_store = "{object_store}"\n'
    )


@contextlib.contextmanager
def replica(config: Path, data_dir: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """One ``retouch-server`` on ``port``, stopped (SIGTERM, graceful) on exit."""
    env = {
        **os.environ,
        **AWS,
        "RETOUCH_CONFIG": str(config),
        "RETOUCH_DATA_DIR": str(data_dir),
        "RETOUCH_LISTEN": f"127.0.0.1:{port}",
        # Results are served from S3's presigned URLs; no HTTP route needed on a fixed port.
        "RETOUCH_RESULTS_HTTP_LISTEN": "127.0.0.1:0",
    }
    process = subprocess.Popen([sys.executable, "-m", "retouch.server"], env=env)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    # Also when started in the background, where SIGINT arrives ignored.
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports", default="50051,50052", help="the replicas' ports")
    args = parser.parse_args(argv)
    ports = [int(p) for p in args.ports.split(",")]
    with (
        tempfile.TemporaryDirectory(prefix="retouch-replicas-") as tmp,
        PostgresServer.running() as postgres,
        started_redis() as redis,
        started_seaweedfs() as seaweed,
    ):
        root = Path(tmp)
        config = root / "retouch.toml"
        config.write_text(
            shared_settings(postgres.new_database(), redis.url, seaweed.url("replicas"))
        )
        print(f"retouch replicas: shared config {config}:\n{config.read_text()}", flush=True)
        with contextlib.ExitStack() as replicas:
            running = [
                replicas.enter_context(replica(config, root / f"replica-{port}", port))
                for port in ports
            ]
            addresses = ",".join(f"127.0.0.1:{port}" for port in ports)
            print(
                f"retouch replicas: listening on {addresses}; call them round-robin with the "
                f"target ipv4:{addresses}; Ctrl-C stops everything",
                flush=True,
            )
            with contextlib.suppress(KeyboardInterrupt):
                for process in running:
                    process.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
