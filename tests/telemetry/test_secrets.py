"""A provider's secret echoed in its error never reaches a span, a log line or a caller."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest
from grpc import aio

from retouch.sdk import Health, HealthReport, Secret
from retouch.server.app import running
from retouch.server.config import DEV_TENANT, ServerConfig
from retouch.server.registry import LoadedProvider, ProviderRegistry
from retouch.server.telemetry import Telemetry
from retouch.v1 import image_edit_pb2_grpc
from tests.e2e.hosted_fakes import KeyedHosted
from tests.helpers import metadata, read_all
from tests.policy.test_money import inpaint
from tests.telemetry.conftest import Receiver

KEY = "sk-traced-4d3c2b1a0f9e8d7c"


async def test_an_echoed_key_is_scrubbed_from_spans_logs_and_the_status(
    tmp_path: Path, telemetry: Telemetry, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    keyed = KeyedHosted()
    await keyed.start({"api_key": Secret(KEY)})
    keyed.answer(keyed.echo_key())
    registry = ProviderRegistry()
    registry.add(
        LoadedProvider(keyed, keyed.manifest, HealthReport(Health.HEALTHY), (Secret(KEY),))
    )
    config = ServerConfig(
        listen="127.0.0.1:0",
        data_dir=tmp_path / "data",
        environment="staging",
        tls_terminated_upstream=True,
        tenants=(DEV_TENANT,),
    )
    async with (
        running(config, registry=registry, telemetry=telemetry) as server,
        aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        edit = image_edit_pb2_grpc.ImageEditStub(channel)
        with pytest.raises(aio.AioRpcError) as failed:
            await read_all(edit.Inpaint(inpaint(), metadata=metadata()))
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "invalid token ***" in (failed.value.details() or "")
    provider = receiver.span("retouch.provider")
    assert [e.name for e in provider.events] == ["exception"]
    assert "invalid token ***" in str(provider)
    assert KEY not in str(receiver.traces)
    assert KEY not in caplog.text
