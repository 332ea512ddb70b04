"""Log records carry the trace they were written in, in plain or JSON lines."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from retouch.sdk import CostModel, Operation, ProviderUnavailable
from retouch.sdk.testing import FakeProvider
from retouch.server.telemetry import (
    JsonFormatter,
    PlainFormatter,
    Telemetry,
    TraceContextFilter,
    log_format,
)
from tests.helpers import metadata, read_all
from tests.telemetry.conftest import Receiver, Served, inpaint_request

Serve = Callable[..., AbstractAsyncContextManager[Served]]

log = logging.getLogger("tests.telemetry")


@pytest.fixture
def traced_caplog(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog whose handler adds the trace context, as the server's handler does."""
    trace_filter = TraceContextFilter()
    caplog.handler.addFilter(trace_filter)
    try:
        yield caplog
    finally:
        caplog.handler.removeFilter(trace_filter)


def test_records_in_a_span_carry_its_trace_and_span_ids(
    traced_caplog: pytest.LogCaptureFixture,
) -> None:
    tracer = TracerProvider().get_tracer("tests")
    with tracer.start_as_current_span("work") as span:
        log.warning("inside")
    log.warning("outside")

    inside, outside = traced_caplog.records
    context = span.get_span_context()
    assert inside.__dict__["trace_id"] == f"{context.trace_id:032x}"
    assert inside.__dict__["span_id"] == f"{context.span_id:016x}"
    assert outside.__dict__["trace_id"] == ""
    assert outside.__dict__["span_id"] == ""


def test_json_lines_and_plain_lines_show_the_trace() -> None:
    record = logging.LogRecord("retouch.server", logging.ERROR, __file__, 1, "x=%d", (1,), None)
    record.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    record.span_id = "00f067aa0ba902b7"

    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "x=1"
    assert entry["level"] == "ERROR"
    assert entry["logger"] == "retouch.server"
    assert entry["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert entry["span_id"] == "00f067aa0ba902b7"
    assert entry["time"].endswith("+00:00")
    line = PlainFormatter().format(record)
    assert line.endswith(
        "ERROR retouch.server: x=1 trace_id=4bf92f3577b34da6a3ce929d0e0e4736 "
        "span_id=00f067aa0ba902b7"
    )

    record.trace_id = record.span_id = ""
    assert PlainFormatter().format(record).endswith("ERROR retouch.server: x=1")


def test_the_format_is_chosen_by_retouch_log_format() -> None:
    assert log_format({}) == "plain"
    assert log_format({"RETOUCH_LOG_FORMAT": "json"}) == "json"
    assert log_format({"RETOUCH_LOG_FORMAT": "JSON"}) == "json"
    assert log_format({"RETOUCH_LOG_FORMAT": "text"}) == "plain"


async def test_a_jobs_log_lines_carry_the_trace_of_its_rpc(
    serve: Serve,
    telemetry: Telemetry,
    receiver: Receiver,
    traced_caplog: pytest.LogCaptureFixture,
) -> None:
    down = FakeProvider("down", [Operation.INPAINT], fail_with=ProviderUnavailable("no GPU"))
    spare = FakeProvider("spare", [Operation.INPAINT], steps=1, cost=CostModel(credits_per_job=5))
    async with serve(telemetry, providers=[down, spare]) as served:
        await read_all(served.edit.Inpaint(inpaint_request(), metadata=metadata()))

    [fallback] = [r for r in traced_caplog.records if "falling back" in r.getMessage()]
    rpc = receiver.span("/retouch.v1.ImageEdit/Inpaint")
    assert fallback.__dict__["trace_id"] == rpc.trace_id.hex()
    assert fallback.__dict__["span_id"] == rpc.span_id.hex()


def test_the_server_command_logs_in_the_chosen_format_and_refuses_bad_otel_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from retouch.server.__main__ import main

    monkeypatch.setenv("RETOUCH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RETOUCH_LOG_FORMAT", "json")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    root = logging.getLogger()
    before = list(root.handlers), root.level
    try:
        assert main(["--listen", "127.0.0.1:0"]) == 2
        [added] = [h for h in root.handlers if h not in before[0]]
    finally:
        root.handlers[:] = before[0]
        root.setLevel(before[1])
    assert isinstance(added.formatter, JsonFormatter)
    assert any(isinstance(f, TraceContextFilter) for f in added.filters)
    assert "unknown exporter zipkin" in capsys.readouterr().err
