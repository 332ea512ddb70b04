"""Health, reflection, auth details and the Providers service."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from retouch.server.app import RunningServer
from retouch.v1 import (
    common_pb2,
    image_edit_pb2,
    image_edit_pb2_grpc,
    providers_pb2,
    providers_pb2_grpc,
)
from tests.helpers import bad_fields, metadata, rpc_details


async def test_health_needs_no_credentials(channel: aio.Channel) -> None:
    health: Any = health_pb2_grpc.HealthStub(channel)
    for service in ("", "retouch.v1.ImageEdit", "retouch.v1.Providers"):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


BAD_KEY = ("authorization", "Bearer wrong")
GOOD_KEY = metadata()[0]


@pytest.mark.parametrize(
    ("pairs", "reason"),
    [
        ((), "MISSING_CREDENTIALS"),
        ((("authorization", "Basic abc"),), "MALFORMED_CREDENTIALS"),
        ((BAD_KEY,), "INVALID_API_KEY"),
        # More than one key, in either order, is never read as the last one sent.
        ((BAD_KEY, GOOD_KEY), "DUPLICATE_CREDENTIALS"),
        ((GOOD_KEY, BAD_KEY), "DUPLICATE_CREDENTIALS"),
        ((GOOD_KEY, GOOD_KEY), "DUPLICATE_CREDENTIALS"),
    ],
)
async def test_bad_credentials_get_unauthenticated_with_error_info(
    providers: providers_pb2_grpc.ProvidersAsyncStub,
    pairs: tuple[tuple[str, str], ...],
    reason: str,
) -> None:
    with pytest.raises(aio.AioRpcError) as refused:
        await providers.ListProviders(providers_pb2.ListProvidersRequest(), metadata=pairs)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    (info,) = rpc_details(refused.value)
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.reason == reason
    assert info.domain == "retouch.v1"


@pytest.mark.parametrize("subjects", [("user:alice", "user:eve"), ("user:eve", "user:alice")])
async def test_more_than_one_subject_header_is_refused_in_either_order(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub, subjects: tuple[str, str]
) -> None:
    pairs = (*metadata(), *(("x-retouch-subject", subject) for subject in subjects))
    with pytest.raises(aio.AioRpcError) as refused:
        await edit.ListJobs(image_edit_pb2.ListJobsRequest(), metadata=pairs)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(refused.value) == ["x-retouch-subject"]


async def test_list_providers_shows_the_opencv_manifest(
    providers: providers_pb2_grpc.ProvidersAsyncStub,
) -> None:
    answer = await providers.ListProviders(
        providers_pb2.ListProvidersRequest(), metadata=metadata()
    )
    (opencv,) = [p for p in answer.providers if p.name == "opencv"]
    assert set(opencv.operations) == {
        common_pb2.OPERATION_INPAINT,
        common_pb2.OPERATION_OUTPAINT,
        common_pb2.OPERATION_ENHANCE,
    }
    assert opencv.models[:2] == ["telea", "ns"]
    assert opencv.supports_mask
    assert opencv.supports_outpaint
    assert list(opencv.upscale_factors) == [2, 4]
    assert not opencv.remote
    assert opencv.health == providers_pb2.PROVIDER_HEALTH_HEALTHY
    assert opencv.cost.credits_per_job >= 0


async def test_list_providers_filters_by_operation(
    providers: providers_pb2_grpc.ProvidersAsyncStub,
) -> None:
    answer = await providers.ListProviders(
        providers_pb2.ListProvidersRequest(operation=common_pb2.OPERATION_ENHANCE),
        metadata=metadata(),
    )
    assert all(common_pb2.OPERATION_ENHANCE in p.operations for p in answer.providers)


async def test_message_size_limits_are_set(server: RunningServer, channel: aio.Channel) -> None:
    """A request over the receive limit is refused by gRPC itself, before any handler."""
    edit = image_edit_pb2.InpaintRequest(
        image=common_pb2.ImageInput(data=b"\0" * (server.config.max_receive_message_bytes + 1))
    )
    from retouch.v1 import image_edit_pb2_grpc

    with pytest.raises(aio.AioRpcError) as refused:
        async for _ in image_edit_pb2_grpc.ImageEditStub(channel).Inpaint(
            edit, metadata=metadata()
        ):
            pass
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
