"""Telemetry is off unless OTEL_* variables ask for it, and then it is not there at all."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc.aio
import pytest

from retouch.sdk import Operation, trace_headers
from retouch.server.interceptors import (
    AccessLogInterceptor,
    AuthInterceptor,
    RequestDecodingInterceptor,
)
from retouch.server.telemetry import (
    NOOP,
    Telemetry,
    TelemetryError,
    TelemetrySettings,
    current_rpc,
    provider_call,
    stage,
)
from tests.helpers import metadata, read_all
from tests.telemetry.conftest import Receiver, Served, TracingProvider, inpaint_request

Serve = Callable[..., AbstractAsyncContextManager[Served]]


async def test_a_server_without_otel_variables_installs_no_interceptor_and_records_nothing(
    serve: Serve, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed: list[Any] = []
    make_server = grpc.aio.server

    def spy(*args: Any, **kwargs: Any) -> grpc.aio.Server:
        installed.extend(kwargs.get("interceptors") or ())
        return make_server(*args, **kwargs)

    monkeypatch.setattr(grpc.aio, "server", spy)
    telemetry = Telemetry.from_environ({})
    fake = TracingProvider("fake", [Operation.INPAINT], steps=1)
    async with serve(telemetry, providers=[fake]) as served:
        events = await read_all(served.edit.Inpaint(inpaint_request(), metadata=metadata()))

    assert events[-1].HasField("completed")
    assert not telemetry.enabled
    assert telemetry.server_interceptors() == []
    # The access log is not telemetry: it stays on unless the config turns it off.
    assert [type(i) for i in installed] == [
        AccessLogInterceptor,
        AuthInterceptor,
        RequestDecodingInterceptor,
    ]
    assert fake.scopes == [None]
    assert fake.headers == [{}]
    assert receiver.traces == []
    assert receiver.metrics == []


def test_hooks_return_the_shared_no_op_outside_a_traced_call() -> None:
    assert stage("validation") is NOOP
    assert provider_call("fake", "fake") is NOOP
    assert current_rpc() is None
    with stage("storage") as scope:
        scope.set_attribute("retouch.bytes", 1)
    assert trace_headers() == {}


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_SERVICE_NAME": "retouch"},
        {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"},
        {"OTEL_SDK_DISABLED": "TRUE", "OTEL_TRACES_EXPORTER": "otlp"},
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"},
    ],
    ids=["nothing", "name only", "sdk disabled", "sdk disabled, any case", "both none"],
)
def test_telemetry_stays_off(environ: dict[str, str]) -> None:
    assert not TelemetrySettings.from_environ(environ).enabled


def test_an_endpoint_turns_both_signals_on_over_otlp() -> None:
    settings = TelemetrySettings.from_environ(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_SERVICE_NAME": "edit"}
    )
    assert settings.traces == ("otlp",)
    assert settings.metrics == ("otlp",)
    assert settings.traces_endpoint == settings.metrics_endpoint == "http://collector:4317"
    assert settings.service_name == "edit"
    assert "grpc.health.v1.Health" in settings.excluded_services


def test_each_signal_can_be_turned_off_or_sent_elsewhere() -> None:
    settings = TelemetrySettings.from_environ(
        {
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://metrics:4317",
            "OTEL_PYTHON_GRPC_EXCLUDED_SERVICES": "retouch.v1.Providers, retouch.v1.Account",
        }
    )
    assert settings.traces == ()
    assert settings.metrics == ("otlp",)
    assert settings.metrics_endpoint == "http://metrics:4317"
    assert {"retouch.v1.Providers", "retouch.v1.Account"} <= settings.excluded_services


@pytest.mark.parametrize(
    ("environ", "complaint"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "unknown exporter zipkin"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "grpc or http/protobuf",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRIC_EXPORT_INTERVAL": "soon"},
            "expected milliseconds",
        ),
    ],
)
def test_settings_retouch_cannot_honour_stop_the_start(
    environ: dict[str, str], complaint: str
) -> None:
    with pytest.raises(TelemetryError, match=complaint):
        Telemetry.from_environ(environ)
