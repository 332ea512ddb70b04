"""Fixtures of the client's tests: the real server's address, a client of it, and files."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from retouch.client import AsyncClient
from retouch.sdk import Health, HealthReport
from retouch.sdk.testing import FakeProvider
from retouch.server.app import RunningServer, running
from retouch.server.config import DEV_API_KEY, ServerConfig
from retouch.server.registry import LoadedProvider, ProviderRegistry
from tests.client.fakes import Held


@pytest.fixture
def config(config: ServerConfig) -> ServerConfig:
    # Small download chunks, so that a result arrives in several.
    return dataclasses.replace(config, download_chunk_bytes=32 * 1024)


@pytest.fixture
def target(server: RunningServer) -> str:
    return f"127.0.0.1:{server.port}"


@pytest.fixture
async def client(target: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(target, api_key=DEV_API_KEY, subject="user:42") as opened:
        yield opened


@pytest.fixture
def photo_file(tmp_path: Path, photo_png: bytes) -> Path:
    path = tmp_path / "photo.png"
    path.write_bytes(photo_png)
    return path


@pytest.fixture
def mask_file(tmp_path: Path, mask_png: bytes) -> Path:
    path = tmp_path / "mask.png"
    path.write_bytes(mask_png)
    return path


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """An empty directory for results (``tmp_path`` also holds the server's data)."""
    path = tmp_path / "out"
    path.mkdir()
    return path


@pytest.fixture
async def held(config: ServerConfig) -> AsyncIterator[Held]:
    release = asyncio.Event()
    fake = FakeProvider(name="held", steps=2, release=release)
    await fake.start({})
    registry = ProviderRegistry()
    registry.add(LoadedProvider(fake, fake.manifest, HealthReport(Health.HEALTHY)))
    async with running(config, registry=registry) as server:
        try:
            yield Held(f"127.0.0.1:{server.port}", fake, release)
        finally:
            release.set()  # a job a test left running ends now, not at the shutdown grace
