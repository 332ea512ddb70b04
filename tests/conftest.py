"""Fixtures shared by every test: a real server on a free loopback port, and its stubs."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from grpc import aio

from retouch.server.app import RunningServer, running
from retouch.server.config import DEV_TENANT, ServerConfig, TenantConfig, hash_key
from retouch.v1 import image_edit_pb2_grpc, providers_pb2_grpc
from tests.engines.postgres import PostgresServer
from tests.helpers import metadata, photo, png, square_mask

pytest_plugins = ["tests.engines.redis", "tests.engines.seaweed"]

OTHER_KEY = "acme-secret-key"
OTHER_TENANT = TenantConfig(name="acme", key_sha256=hash_key(OTHER_KEY))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole run; ``postgres.new_database()`` per test."""
    with PostgresServer.running() as server:
        yield server


@pytest.fixture
def config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(
        listen="127.0.0.1:0",
        data_dir=tmp_path / "data",
        environment="test",
        tenants=(DEV_TENANT, OTHER_TENANT),
        shutdown_grace_s=2.0,
    )


@pytest.fixture
async def server(config: ServerConfig) -> AsyncIterator[RunningServer]:
    async with running(config) as started:
        yield started


@pytest.fixture
async def channel(server: RunningServer) -> AsyncIterator[aio.Channel]:
    async with aio.insecure_channel(f"127.0.0.1:{server.port}") as opened:
        yield opened


@pytest.fixture
def edit(channel: aio.Channel) -> image_edit_pb2_grpc.ImageEditAsyncStub:
    return image_edit_pb2_grpc.ImageEditStub(channel)


@pytest.fixture
def providers(channel: aio.Channel) -> providers_pb2_grpc.ProvidersAsyncStub:
    return providers_pb2_grpc.ProvidersStub(channel)


@pytest.fixture
def photo_png() -> bytes:
    return png(photo())


@pytest.fixture
def mask_png() -> bytes:
    return png(square_mask((256, 256), (96, 96, 160, 160)))


@pytest.fixture
async def slow_server(config: ServerConfig) -> AsyncIterator[RunningServer]:
    """A server whose only provider is a fake that takes ~2 s in 40 steps."""
    from retouch.sdk import Health, HealthReport, Operation
    from retouch.sdk.testing import FakeProvider
    from retouch.server.registry import LoadedProvider, ProviderRegistry

    fake = FakeProvider(
        name="slow",
        operations=frozenset({Operation.INPAINT, Operation.OUTPAINT, Operation.ENHANCE}),
        steps=40,
        step_delay=0.05,
    )
    await fake.start({})
    registry = ProviderRegistry()
    registry.add(LoadedProvider(fake, fake.manifest, HealthReport(Health.HEALTHY)))
    async with running(config, registry=registry) as started:
        yield started


@pytest.fixture
async def slow_edit(
    slow_server: RunningServer,
) -> AsyncIterator[image_edit_pb2_grpc.ImageEditAsyncStub]:
    async with aio.insecure_channel(f"127.0.0.1:{slow_server.port}") as opened:
        yield image_edit_pb2_grpc.ImageEditStub(opened)


@dataclass
class Harness:
    """A running server with fake providers, its stubs, and its parts."""

    server: RunningServer
    edit: Any
    account: Any
    fakes: dict[str, Any]
    providers: Any = None

    async def usage(self, subject: str) -> Any:
        from retouch.v1 import account_pb2

        return await self.account.GetUsage(
            account_pb2.GetUsageRequest(subject=subject), metadata=metadata()
        )


@pytest.fixture
def harness(tmp_path: Path) -> Callable[..., Any]:
    """``async with harness(plans=..., providers=[FakeProvider...], ...) as h:``."""
    from retouch.sdk import Health, HealthReport
    from retouch.server.policy import Plan, PlanBook
    from retouch.server.registry import LoadedProvider, ProviderRegistry
    from retouch.v1 import account_pb2_grpc

    @contextlib.asynccontextmanager
    async def start(
        *,
        plans: list[Plan],
        providers: list[Any],
        default_plan: str | None = None,
        environment: str = "test",
        clock: Any = None,
        registry: ProviderRegistry | None = None,
        **config_changes: Any,
    ) -> AsyncIterator[Harness]:
        """``config_changes`` replace fields of the server's config (routing rules, …).
        ``registry`` brings providers already discovered and started (real plugins)."""
        registry = ProviderRegistry() if registry is None else registry
        for fake in providers:
            await fake.start({})
            registry.add(LoadedProvider(fake, fake.manifest, HealthReport(Health.HEALTHY)))
        book = PlanBook({plan.name: plan for plan in plans})
        default = default_plan or plans[0].name
        config = ServerConfig(
            listen="127.0.0.1:0",
            data_dir=tmp_path / "data",
            environment=environment,  # type: ignore[arg-type]
            # Loopback plaintext, as behind a proxy that terminates TLS.
            tls_terminated_upstream=environment not in ("local", "test"),
            plans=book,
            tenants=(
                dataclasses.replace(DEV_TENANT, default_plan=default, rate_per_s=1e6, burst=10**6),
                dataclasses.replace(OTHER_TENANT, default_plan=default),
            ),
            shutdown_grace_s=1.0,
        )
        config = dataclasses.replace(config, **config_changes)
        async with (
            running(config, registry=registry, clock=clock) as server,
            aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
        ):
            yield Harness(
                server=server,
                edit=image_edit_pb2_grpc.ImageEditStub(channel),
                account=account_pb2_grpc.AccountStub(channel),
                fakes={name: loaded.provider for name, loaded in registry.providers.items()},
                providers=providers_pb2_grpc.ProvidersStub(channel),
            )

    return start
