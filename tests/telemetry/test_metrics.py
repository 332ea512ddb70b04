"""Metric points exported over OTLP/gRPC after a few jobs and refusals."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import grpc
import pytest
from grpc import aio

from retouch.sdk import Operation, ProviderTimeout
from retouch.sdk.testing import FakeProvider
from retouch.server.policy import Plan
from retouch.server.telemetry import Telemetry
from retouch.v1 import common_pb2
from tests.helpers import metadata, read_all
from tests.telemetry.conftest import Receiver, Served, attributes, inpaint_request

Serve = Callable[..., AbstractAsyncContextManager[Served]]

JOBS = 3


async def test_jobs_stages_refusals_and_bytes_are_counted(
    serve: Serve, telemetry: Telemetry, receiver: Receiver
) -> None:
    fake = FakeProvider("fake", [Operation.INPAINT], steps=1)
    stored = 0
    async with serve(telemetry, providers=[fake], plan=Plan("capped", max_steps=10)) as served:
        for _ in range(JOBS):
            events = await read_all(served.edit.Inpaint(inpaint_request(), metadata=metadata()))
            stored += events[-1].completed.image.size_bytes
        # A job's end is recorded before its stream ends: flushing now sees all of them.
        assert await asyncio.to_thread(telemetry.force_flush)
        jobs = receiver.metric("retouch.jobs")
        assert [(attributes(p), p.as_int) for p in jobs.sum.data_points] == [
            (
                {
                    "retouch.operation": "inpaint",
                    "retouch.provider": "fake",
                    "retouch.outcome": "succeeded",
                    "retouch.status_code": "OK",
                },
                JOBS,
            )
        ]
        assert jobs.sum.is_monotonic

        too_many_steps = inpaint_request(params=common_pb2.GenerationParams(steps=50))
        with pytest.raises(aio.AioRpcError) as refused:
            await read_all(served.edit.Inpaint(too_many_steps, metadata=metadata()))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Stopping the server flushes what the refused call recorded as it ended.

    stages = {
        attributes(p)["retouch.stage"]: p
        for p in receiver.metric("retouch.stage.duration").histogram.data_points
    }
    assert set(stages) == {
        "policy.admit",
        "validation",
        "routing",
        "policy.tokens",
        "decode",
        "policy.reserve",
        "provider",
        "storage",
        "total",
    }
    assert stages["total"].count == JOBS
    assert {attributes(p)["rpc.method"] for p in stages.values()} == {"Inpaint"}
    assert stages["provider"].count == JOBS
    assert attributes(stages["provider"])["retouch.provider"] == "fake"
    assert stages["policy.admit"].count == JOBS + 1  # the refusal is timed where it happened
    assert stages["policy.tokens"].count == JOBS
    assert stages["total"].sum >= stages["provider"].sum > 0
    assert list(stages["total"].explicit_bounds)[:3] == [0.001, 0.0025, 0.005]

    refusals = receiver.metric("retouch.refusals").sum.data_points
    assert [(attributes(p), p.as_int) for p in refusals] == [
        (
            {
                "rpc.method": "Inpaint",
                "retouch.status_code": "PERMISSION_DENIED",
                "retouch.reason": "PLAN_MAX_STEPS",
            },
            1,
        )
    ]
    [written] = receiver.metric("retouch.storage.bytes").sum.data_points
    assert attributes(written) == {"retouch.format": "PNG"}
    assert written.as_int == stored


async def test_provider_errors_are_counted_by_kind(
    serve: Serve, telemetry: Telemetry, receiver: Receiver
) -> None:
    slow = FakeProvider("slow", [Operation.INPAINT], fail_with=ProviderTimeout("took too long"))
    async with serve(telemetry, providers=[slow]) as served:
        with pytest.raises(aio.AioRpcError):
            await read_all(served.edit.Inpaint(inpaint_request(), metadata=metadata()))

    [error] = receiver.metric("retouch.provider.errors").sum.data_points
    assert attributes(error) == {"retouch.provider": "slow", "retouch.error_kind": "timeout"}
    assert error.as_int == 1
    [failed] = receiver.metric("retouch.jobs").sum.data_points
    assert attributes(failed)["retouch.outcome"] == "failed"
    assert attributes(failed)["retouch.status_code"] == "UNAVAILABLE"
    # The job was admitted and started: its failure is not a refusal.
    assert not [m for r in receiver.metrics for m in _names(r) if m == "retouch.refusals"]


def _names(request: object) -> list[str]:
    return [
        metric.name
        for resource in request.resource_metrics  # type: ignore[attr-defined]
        for scope in resource.scope_metrics
        for metric in scope.metrics
    ]


async def test_metrics_alone_need_no_tracing(serve: Serve, receiver: Receiver) -> None:
    metrics_only = Telemetry.from_environ(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_TRACES_EXPORTER": "none"}
    )
    assert metrics_only.tracer_provider is None
    async with serve(metrics_only, providers=[FakeProvider("fake", [Operation.INPAINT])]) as s:
        await read_all(s.edit.Inpaint(inpaint_request(), metadata=metadata()))
        with pytest.raises(aio.AioRpcError):
            await read_all(s.edit.Inpaint(inpaint_request()))

    assert receiver.traces == []
    [succeeded] = receiver.metric("retouch.jobs").sum.data_points
    assert succeeded.as_int == 1
    [refused] = receiver.metric("retouch.refusals").sum.data_points
    assert attributes(refused)["retouch.reason"] == "MISSING_CREDENTIALS"
