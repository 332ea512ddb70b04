"""Token buckets shared over Redis, seen over real gRPC: two servers on one Redis
share a subject's bucket; a stopped Redis with ``rate_limiter_failure = "closed"``
refuses with UNAVAILABLE, reason RATE_LIMITER_UNAVAILABLE, and RetryInfo."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc import aio

from retouch.sdk import Health, HealthReport, Operation, ProviderRateLimited
from retouch.sdk.testing import FakeProvider
from retouch.server.app import running
from retouch.server.config import DEV_TENANT, ServerConfig
from retouch.server.policy import Plan, PlanBook
from retouch.server.registry import LoadedProvider, ProviderRegistry
from retouch.v1 import common_pb2, image_edit_pb2_grpc
from retouch.v1 import image_edit_pb2 as pb
from tests.engines.redis import started_redis
from tests.helpers import metadata, read_all, rpc_details

SUBJECT = "user:shared"


def config(data_dir: Path, rate_limiter: str, **overrides: object) -> ServerConfig:
    plan = Plan("tight", rate_per_s=1e-6, burst=2)
    return ServerConfig(
        listen="127.0.0.1:0",
        data_dir=data_dir,
        environment="test",
        plans=PlanBook({"tight": plan}),
        tenants=(dataclasses.replace(DEV_TENANT, default_plan="tight"),),
        rate_limiter=rate_limiter,
        rate_limiter_timeout_s=2.0,
        **overrides,  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def stub(config: ServerConfig) -> AsyncIterator[image_edit_pb2_grpc.ImageEditAsyncStub]:
    async with (
        running(config) as server,
        aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        yield image_edit_pb2_grpc.ImageEditStub(channel)


def request(photo_png: bytes, mask_png: bytes) -> pb.InpaintRequest:
    return pb.InpaintRequest(
        image=common_pb2.ImageInput(data=photo_png), mask=common_pb2.ImageInput(data=mask_png)
    )


async def test_two_servers_on_one_redis_share_a_subjects_bucket(
    tmp_path: Path, redis_url: str, photo_png: bytes, mask_png: bytes
) -> None:
    async with (
        stub(config(tmp_path / "a", redis_url)) as first,
        stub(config(tmp_path / "b", redis_url)) as second,
    ):
        edit = request(photo_png, mask_png)
        for replica in (first, second):
            events = await read_all(replica.Inpaint(edit, metadata=metadata(subject=SUBJECT)))
            assert events[-1].HasField("completed")
        with pytest.raises(aio.AioRpcError) as refused:
            await read_all(first.Inpaint(edit, metadata=metadata(subject=SUBJECT)))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        retry = [
            d for d in rpc_details(refused.value) if isinstance(d, error_details_pb2.RetryInfo)
        ]
        [retry_info] = retry
        assert retry_info.retry_delay.seconds > 1000  # one token at 1e-6/s


async def test_a_stopped_redis_fails_closed_over_grpc(
    tmp_path: Path, photo_png: bytes, mask_png: bytes
) -> None:
    with started_redis() as redis_server:
        url = redis_server.url
        redis_server.stop()
        async with stub(config(tmp_path, url, rate_limiter_failure="closed")) as edit:
            with pytest.raises(aio.AioRpcError) as refused:
                await read_all(edit.Inpaint(request(photo_png, mask_png), metadata=metadata()))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    details = rpc_details(refused.value)
    reasons = [d.reason for d in details if isinstance(d, error_details_pb2.ErrorInfo)]
    assert reasons == ["RATE_LIMITER_UNAVAILABLE"]
    assert [d for d in details if isinstance(d, error_details_pb2.RetryInfo)]


async def test_a_stopped_redis_fails_open_over_grpc(
    tmp_path: Path, photo_png: bytes, mask_png: bytes
) -> None:
    with started_redis() as redis_server:
        url = redis_server.url
        redis_server.stop()
        async with stub(config(tmp_path, url, rate_limiter_failure="open")) as edit:
            events = await read_all(edit.Inpaint(request(photo_png, mask_png), metadata=metadata()))
    assert events[-1].HasField("completed")


async def test_a_429_seen_by_one_server_slows_the_other(
    tmp_path: Path, redis_url: str, photo_png: bytes, mask_png: bytes
) -> None:
    limited = FakeProvider(
        "limited",
        [Operation.INPAINT],
        requests_per_minute=60,
        fail_with=ProviderRateLimited("429 too many requests", retry_after=2.0),
    )
    await limited.start({})
    registry = ProviderRegistry()
    registry.add(LoadedProvider(limited, limited.manifest, HealthReport(Health.HEALTHY)))
    # The default plan: buckets roomy enough that only the provider's limit matters.
    first_config = ServerConfig(
        listen="127.0.0.1:0",
        data_dir=tmp_path / "a",
        environment="test",
        rate_limiter=redis_url,
        rate_limiter_timeout_s=2.0,
    )
    second_config = dataclasses.replace(first_config, data_dir=tmp_path / "b")
    async with (
        running(first_config, registry=registry) as first,
        running(second_config, registry=registry) as second,
        aio.insecure_channel(f"127.0.0.1:{first.port}") as channel,
    ):
        before = await second.upstream.snapshot("limited")
        assert before is not None
        assert before.rate == pytest.approx(1.0)
        edit = image_edit_pb2_grpc.ImageEditStub(channel)
        with pytest.raises(aio.AioRpcError) as throttled:
            await read_all(edit.Inpaint(request(photo_png, mask_png), metadata=metadata()))
        assert throttled.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        after = await second.upstream.snapshot("limited")
        assert after is not None
        assert after.rate == pytest.approx(0.5, abs=1e-3), "halved for the other server too"
