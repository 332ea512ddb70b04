"""Two replicas on one shared state: two servers in this process, each with its own
connections and clients, on one PostgreSQL database, one Redis and one S3 bucket
(SeaweedFS), all started by the tests."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from grpc import aio

from retouch.sdk import Health, HealthReport
from retouch.server.app import RunningServer, running
from retouch.server.clock import Clock
from retouch.server.config import DEV_TENANT, ServerConfig
from retouch.server.policy import Plan, PlanBook
from retouch.server.registry import LoadedProvider, ProviderRegistry
from retouch.v1 import account_pb2, account_pb2_grpc, image_edit_pb2_grpc
from tests.engines.postgres import PostgresServer
from tests.helpers import metadata

SUBJECT = "user:sam"


@dataclass
class Replica:
    """One running replica and its stubs."""

    server: RunningServer
    edit: Any
    account: Any


@dataclass
class Replicas:
    """Both replicas, and the settings they share."""

    first: Replica
    second: Replica
    config: ServerConfig

    @property
    def both(self) -> tuple[Replica, Replica]:
        return self.first, self.second

    async def grant(self, credits: int) -> None:
        await self.first.account.GrantCredits(
            account_pb2.GrantCreditsRequest(subject=SUBJECT, credits=credits), metadata=metadata()
        )

    async def usage(self, replica: Replica | None = None) -> Any:
        account = (replica or self.second).account
        return await account.GetUsage(
            account_pb2.GetUsageRequest(), metadata=metadata(subject=SUBJECT)
        )


def shared_config(
    tmp_path: Path, engines: tuple[str, str, str], plan: Plan, **changes: Any
) -> ServerConfig:
    """What both replicas are configured with: the engines' URLs (database, rate
    limiter, object store), and ``plan`` for every subject."""
    database, rate_limiter, object_store = engines
    config = ServerConfig(
        listen="127.0.0.1:0",
        data_dir=tmp_path / "replica",
        environment="test",
        database=database,
        rate_limiter=rate_limiter,
        object_store=object_store,
        results_http_listen="127.0.0.1:0",
        plans=PlanBook({plan.name: plan}),
        tenants=(
            dataclasses.replace(DEV_TENANT, default_plan=plan.name, rate_per_s=1e6, burst=10**6),
        ),
        shutdown_grace_s=1.0,
    )
    return dataclasses.replace(config, **changes)


@contextlib.asynccontextmanager
async def started(
    config: ServerConfig, providers: Sequence[Any], name: str, clock: Clock | None = None
) -> AsyncIterator[Replica]:
    registry = ProviderRegistry()
    for provider in providers:
        await provider.start({})
        registry.add(LoadedProvider(provider, provider.manifest, HealthReport(Health.HEALTHY)))
    own = dataclasses.replace(config, data_dir=config.data_dir.with_name(name))
    async with (
        running(own, registry=registry, clock=clock) as server,
        aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        yield Replica(
            server,
            image_edit_pb2_grpc.ImageEditStub(channel),
            account_pb2_grpc.AccountStub(channel),
        )


@pytest.fixture
def replicas(
    tmp_path: Path, postgres: PostgresServer, redis_url: str, s3_url: str
) -> Callable[..., contextlib.AbstractAsyncContextManager[Replicas]]:
    """``async with replicas(plan=..., first=[providers], second=[providers]) as r:``;
    ``clock=`` gives both replicas one injected clock, other keywords change the config."""

    @contextlib.asynccontextmanager
    async def start(
        *,
        plan: Plan,
        first: Sequence[Any],
        second: Sequence[Any],
        clock: Clock | None = None,
        **changes: Any,
    ) -> AsyncIterator[Replicas]:
        engines = (postgres.new_database(), redis_url, s3_url)
        config = shared_config(tmp_path, engines, plan, **changes)
        async with (
            started(config, first, "first", clock) as one,
            started(config, second, "second", clock) as two,
        ):
            yield Replicas(one, two, config)

    return start
