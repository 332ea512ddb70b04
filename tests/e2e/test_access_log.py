"""The access log: one line per RPC with method, status, duration, caller, job and trace."""

from __future__ import annotations

import dataclasses
import json
import logging
import re

import grpc
import pytest
from grpc import aio

from retouch.server.app import running
from retouch.server.config import ServerConfig
from retouch.server.interceptors.access_log import ACCESS_LOGGER, AccessEntry
from retouch.server.telemetry import JsonFormatter, PlainFormatter, TraceContextFilter
from retouch.v1 import common_pb2, image_edit_pb2_grpc
from retouch.v1 import image_edit_pb2 as pb
from tests.helpers import metadata

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


FORGED_JOB_ID = 'x\n2026-12-03 00:00:00,000 ERROR retouch.server.rpc: FORGED\x00 "q" \\ \u2028'
"""A job id that, written as it is, would end the access line and forge another."""
PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^ ]+)(?: |$)')


def access_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [r.__dict__["access"] for r in caplog.records if r.name == ACCESS_LOGGER]


def pairs(line: str) -> dict[str, str]:
    """A plain access line read back as ``key=value`` pairs, quoted values unescaped."""
    assert "".join(m.group(0) for m in PAIR.finditer(line)) == line
    return {
        m.group(1): json.loads(m.group(2)) if m.group(2).startswith('"') else m.group(2)
        for m in PAIR.finditer(line)
    }


async def test_every_rpc_gets_one_line(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub,
    photo_png: bytes,
    mask_png: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    request = pb.InpaintRequest(
        image=common_pb2.ImageInput(data=photo_png), mask=common_pb2.ImageInput(data=mask_png)
    )
    traced = (*metadata(subject="user:7"), ("traceparent", TRACEPARENT))
    events = [e async for e in edit.Inpaint(request, metadata=traced)]
    job_id = events[0].job_id
    await edit.GetJob(pb.GetJobRequest(job_id=job_id), metadata=metadata(subject="user:7"))
    with pytest.raises(aio.AioRpcError):
        await edit.GetJob(pb.GetJobRequest(job_id="job_missing"), metadata=metadata())
    with pytest.raises(aio.AioRpcError):
        await edit.GetJob(pb.GetJobRequest(job_id=job_id), metadata=(("authorization", "x"),))

    inpaint, get, missing, refused = access_records(caplog)
    assert inpaint["method"] == "/retouch.v1.ImageEdit/Inpaint"
    assert inpaint["status"] == "OK"
    assert (inpaint["tenant"], inpaint["subject"]) == ("dev", "user:7")
    assert inpaint["job_id"] == job_id
    assert inpaint["trace_id"] == TRACE_ID
    assert isinstance(inpaint["duration_ms"], float)
    assert inpaint["duration_ms"] >= 0
    assert (get["status"], get["job_id"]) == ("OK", job_id)
    assert (missing["status"], missing["job_id"]) == ("NOT_FOUND", "job_missing")
    assert refused["status"] == "UNAUTHENTICATED"
    assert refused["tenant"] == ""


def test_json_lines_put_the_fields_at_the_top() -> None:
    record = logging.LogRecord(ACCESS_LOGGER, logging.INFO, __file__, 1, "line", (), None)
    fields = {
        "method": "/retouch.v1.ImageEdit/GetJob",
        "status": "NOT_FOUND",
        "duration_ms": 1.5,
        "tenant": "dev",
        "subject": "service",
        "job_id": "job_1",
        "trace_id": TRACE_ID,
        "peer": "ipv4:127.0.0.1:5000",
    }
    record.access = fields
    TraceContextFilter().filter(record)
    entry = json.loads(JsonFormatter().format(record))
    for key, value in fields.items():
        assert entry[key] == value
    assert entry["logger"] == ACCESS_LOGGER
    assert "line" in PlainFormatter().format(record)


async def test_the_access_log_can_be_turned_off(
    config: ServerConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    quiet = dataclasses.replace(config, access_log=False)
    async with (
        running(quiet) as server,
        aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        stub = image_edit_pb2_grpc.ImageEditStub(channel)
        with pytest.raises(aio.AioRpcError) as error:
            await stub.GetJob(pb.GetJobRequest(job_id="job_x"), metadata=metadata())
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert access_records(caplog) == []


async def test_a_job_id_cannot_break_the_line_or_forge_another(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    # Metadata cannot hold a line break, but it can hold spaces and quotes.
    forged_traceparent = "00-" + 'x" status=OK'.ljust(32, "x") + "-00f067aa0ba902b7-01"
    with pytest.raises(aio.AioRpcError):
        await edit.GetJob(
            pb.GetJobRequest(job_id=FORGED_JOB_ID),
            metadata=(*metadata(), ("traceparent", forged_traceparent)),
        )
    (record,) = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    TraceContextFilter().filter(record)
    plain = PlainFormatter().format(record)
    assert plain.splitlines() == [plain]
    message = record.getMessage()
    assert message.isascii()
    assert message.isprintable()
    fields = pairs(message)
    assert fields["job_id"] == FORGED_JOB_ID
    assert "trace_id" not in fields  # not a W3C trace id: not taken
    assert fields["method"] == "/retouch.v1.ImageEdit/GetJob"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["job_id"] == FORGED_JOB_ID
    assert entry["message"] == message


def test_plain_values_are_written_as_they_are() -> None:
    entry = AccessEntry(
        method="/retouch.v1.ImageEdit/GetJob", subject="user:a.b@c+d-e", job_id="job_é=1"
    )
    assert entry.line() == (
        "method=/retouch.v1.ImageEdit/GetJob status=OK duration_ms=0.0 "
        "subject=user:a.b@c+d-e job_id=job_é=1"
    )
