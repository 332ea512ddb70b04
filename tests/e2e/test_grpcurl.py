"""Operators' view: the real grpcurl binary lists, describes and calls the service."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from retouch.server.app import RunningServer
from retouch.server.config import DEV_API_KEY
from tests.e2e.conftest import SERVER_NAME, Pki


def grpcurl_path() -> str:
    found = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    assert Path(found).exists(), "grpcurl is installed by requirements-dev.txt"
    return found


async def grpcurl(
    server: RunningServer,
    *verb: str,
    data: str | None = None,
    transport: Sequence[str] = ("-plaintext",),
) -> str:
    """Run ``grpcurl -plaintext [-H auth -d @] ADDRESS VERB...`` against ``server``
    (``transport`` replaces ``-plaintext``, for TLS)."""
    options = []
    if data is not None:
        options = ["-H", f"authorization: Bearer {DEV_API_KEY}", "-d", "@"]
    process = await asyncio.create_subprocess_exec(
        grpcurl_path(),
        *transport,
        *options,
        f"127.0.0.1:{server.port}",
        *verb,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(data.encode() if data else None), 60)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_grpcurl_lists_services_through_reflection(server: RunningServer) -> None:
    listed = (await grpcurl(server, "list")).split()
    assert {"retouch.v1.ImageEdit", "retouch.v1.Providers", "grpc.health.v1.Health"} <= set(listed)


async def test_grpcurl_describes_the_contract_with_its_docs(server: RunningServer) -> None:
    described = await grpcurl(server, "describe", "retouch.v1.ImageEdit")
    assert (
        "rpc Inpaint ( .retouch.v1.InpaintRequest ) returns ( stream .retouch.v1.JobEvent )"
        in described
    )
    message = await grpcurl(server, "describe", "retouch.v1.InpaintRequest")
    assert "request_id" in message
    assert "mask_options" in message
    # The proto comments travel with the descriptors.
    assert "// Replace the masked region of an image." in described
    assert "Idempotency key chosen by the caller" in message
    health = await grpcurl(server, "describe", "grpc.health.v1.Health")
    assert "rpc Check" in health


async def test_grpcurl_runs_an_inpaint_from_json(
    server: RunningServer, photo_png: bytes, mask_png: bytes
) -> None:
    request = {
        "image": {"data": base64.b64encode(photo_png).decode()},
        "mask": {"data": base64.b64encode(mask_png).decode()},
        "output": {"format": "IMAGE_FORMAT_JPEG"},
    }
    out = await grpcurl(server, "retouch.v1.ImageEdit/Inpaint", data=json.dumps(request))
    decoder = json.JSONDecoder()
    events, position = [], 0
    text = out.strip()
    while position < len(text):
        event, position = decoder.raw_decode(text, position)
        events.append(event)
        while position < len(text) and text[position].isspace():
            position += 1
    assert "accepted" in events[0]
    # protojson names: lowerCamelCase, as the descriptors from protoc declare them.
    assert events[-1]["completed"]["image"]["contentType"] == "image/jpeg"


async def test_grpcurl_shows_error_details(server: RunningServer) -> None:
    command = [
        grpcurl_path(),
        "-plaintext",
        "-d",
        '{"image": {"data": "bm90IGFuIGltYWdl"}}',
        "-H",
        f"authorization: Bearer {DEV_API_KEY}",
        f"127.0.0.1:{server.port}",
        "retouch.v1.ImageEdit/Inpaint",
    ]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    text = out.decode() + err.decode()
    assert process.returncode != 0
    assert "InvalidArgument" in text
    assert "google.rpc.BadRequest" in text


async def test_grpcurl_calls_a_tls_server_with_cacert(tls_server: RunningServer, pki: Pki) -> None:
    transport = ("-cacert", str(pki.ca), "-servername", SERVER_NAME)
    listed = (await grpcurl(tls_server, "list", transport=transport)).split()
    assert "retouch.v1.ImageEdit" in listed
    usage = await grpcurl(tls_server, "retouch.v1.Account/GetUsage", data="{}", transport=transport)
    assert json.loads(usage)["plan"]
