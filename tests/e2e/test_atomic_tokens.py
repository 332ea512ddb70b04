"""The subject's, tenant's and provider's tokens are taken in one atomic acquire, over
real gRPC on every rate limiter backend: a provider bucket with no token left refuses
the job, and the caller's buckets keep every token — nothing is reserved either."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc import aio

from retouch.sdk import Health, HealthReport, Operation
from retouch.sdk.testing import FakeProvider
from retouch.server.app import RunningServer, running
from retouch.server.config import DEV_TENANT, ServerConfig
from retouch.server.policy import Plan, PlanBook
from retouch.server.registry import LoadedProvider, ProviderRegistry
from retouch.v1 import account_pb2, account_pb2_grpc, common_pb2, image_edit_pb2_grpc
from retouch.v1 import image_edit_pb2 as pb
from tests.helpers import metadata, read_all, rpc_details

SUBJECT = metadata(subject="user:atomic")
SLOW = 1e-6
"""A refill rate slow enough that no token comes back during a test."""
SLOW_RPM = 0.01
"""A provider's requests a minute: a burst of one call, and no refill during a test."""


@pytest.fixture(params=["memory", "redis"])
def rate_limiter(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue("redis_url")
    return url


@dataclasses.dataclass
class Serving:
    server: RunningServer
    edit: image_edit_pb2_grpc.ImageEditAsyncStub
    account: account_pb2_grpc.AccountAsyncStub

    async def caller_tokens(self) -> dict[str, tuple[float, float]]:
        """The subject's and tenant's buckets, as (tokens, capacity), from GetUsage."""
        usage = await self.account.GetUsage(account_pb2.GetUsageRequest(), metadata=SUBJECT)
        return {b.name: (b.tokens, b.capacity) for b in usage.buckets}

    async def reserved(self) -> int:
        usage = await self.account.GetUsage(account_pb2.GetUsageRequest(), metadata=SUBJECT)
        return usage.credits_reserved

    async def provider_tokens(self, provider: str) -> float:
        snapshot = await self.server.upstream.snapshot(provider)
        assert snapshot is not None
        return snapshot.tokens


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, rate_limiter: str, *providers: FakeProvider
) -> AsyncIterator[Serving]:
    registry = ProviderRegistry()
    for provider in providers:
        await provider.start({})
        registry.add(LoadedProvider(provider, provider.manifest, HealthReport(Health.HEALTHY)))
    config = ServerConfig(
        listen="127.0.0.1:0",
        data_dir=tmp_path,
        environment="test",
        plans=PlanBook({"slow": Plan("slow", rate_per_s=SLOW, burst=3)}),
        tenants=(dataclasses.replace(DEV_TENANT, default_plan="slow", rate_per_s=SLOW, burst=5),),
        rate_limiter=rate_limiter,
        rate_limiter_timeout_s=2.0,
    )
    async with (
        running(config, registry=registry) as server,
        aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        yield Serving(
            server,
            image_edit_pb2_grpc.ImageEditStub(channel),
            account_pb2_grpc.AccountStub(channel),
        )


def limited(name: str = "limited") -> FakeProvider:
    return FakeProvider(name, [Operation.INPAINT], requests_per_minute=SLOW_RPM, quality_rank=1)


def inpaint(photo_png: bytes, mask_png: bytes) -> pb.InpaintRequest:
    return pb.InpaintRequest(
        image=common_pb2.ImageInput(data=photo_png), mask=common_pb2.ImageInput(data=mask_png)
    )


def assert_rate_limited_by(error: aio.AioRpcError, bucket: str) -> None:
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = rpc_details(error)
    [quota] = [d for d in details if isinstance(d, error_details_pb2.QuotaFailure)]
    assert [v.subject for v in quota.violations] == [bucket]
    [retry] = [d for d in details if isinstance(d, error_details_pb2.RetryInfo)]
    assert retry.retry_delay.seconds > 0 or retry.retry_delay.nanos > 0


async def routing_saw_a_token() -> dict[str, float]:
    """The upstream waits routing read before another replica took the last token."""
    return {}


async def test_an_empty_provider_bucket_refuses_and_the_caller_keeps_every_token(
    tmp_path: Path, rate_limiter: str, photo_png: bytes, mask_png: bytes
) -> None:
    async with serving(tmp_path, rate_limiter, limited()) as at:
        full = await at.caller_tokens()
        assert full == {"subject": (3.0, 3.0), "tenant": (5.0, 5.0)}
        assert await at.server.upstream.acquire("limited") == 0.0  # its only token
        with pytest.raises(aio.AioRpcError) as refused:
            await read_all(at.edit.Inpaint(inpaint(photo_png, mask_png), metadata=SUBJECT))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await at.caller_tokens() == full
        assert await at.reserved() == 0


async def test_a_token_taken_after_routing_looked_refuses_and_leaks_nothing(
    tmp_path: Path,
    rate_limiter: str,
    photo_png: bytes,
    mask_png: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with serving(tmp_path, rate_limiter, limited()) as at:
        full = await at.caller_tokens()
        assert await at.server.upstream.acquire("limited") == 0.0
        monkeypatch.setattr(at.server.upstream, "waits", routing_saw_a_token)
        with pytest.raises(aio.AioRpcError) as refused:
            await read_all(at.edit.Inpaint(inpaint(photo_png, mask_png), metadata=SUBJECT))
        assert_rate_limited_by(refused.value, "provider:limited")
        assert await at.caller_tokens() == full
        assert 0 <= await at.provider_tokens("limited") < 1
        assert await at.reserved() == 0


async def test_a_refusing_provider_bucket_sends_the_job_to_the_next_candidate(
    tmp_path: Path,
    rate_limiter: str,
    photo_png: bytes,
    mask_png: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spare = FakeProvider("spare", [Operation.INPAINT], requests_per_minute=SLOW_RPM)
    async with serving(tmp_path, rate_limiter, limited(), spare) as at:
        assert await at.server.upstream.acquire("limited") == 0.0
        monkeypatch.setattr(at.server.upstream, "waits", routing_saw_a_token)
        events = await read_all(at.edit.Inpaint(inpaint(photo_png, mask_png), metadata=SUBJECT))
        assert events[0].accepted.provider == "spare"
        assert events[-1].HasField("completed")
        tokens = await at.caller_tokens()
        assert tokens["subject"][0] == pytest.approx(2, abs=1e-3), "one token, taken once"
        assert tokens["tenant"][0] == pytest.approx(4, abs=1e-3)
        assert 0 <= await at.provider_tokens("spare") < 1, "spare's token taken once"


async def test_the_first_candidates_token_is_taken_once(
    tmp_path: Path, rate_limiter: str, photo_png: bytes, mask_png: bytes
) -> None:
    async with serving(tmp_path, rate_limiter, limited()) as at:
        events = await read_all(at.edit.Inpaint(inpaint(photo_png, mask_png), metadata=SUBJECT))
        assert events[-1].HasField("completed"), "a burst of one is enough for one job"
        assert 0 <= await at.provider_tokens("limited") < 1
