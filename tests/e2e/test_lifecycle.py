"""Graceful shutdown, and jobs that outlive their server: none stays running forever."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from retouch.sdk import Health, HealthReport, Operation
from retouch.sdk.testing import FakeProvider
from retouch.server.app import start_server
from retouch.server.config import ServerConfig
from retouch.server.registry import LoadedProvider, ProviderRegistry
from retouch.v1 import common_pb2, image_edit_pb2_grpc
from retouch.v1 import image_edit_pb2 as pb
from tests.helpers import metadata, photo, png, read_all, read_one, rpc_details


async def fake_registry(steps: int, step_delay: float) -> ProviderRegistry:
    fake = FakeProvider(
        name="fake", operations=frozenset({Operation.ENHANCE}), steps=steps, step_delay=step_delay
    )
    await fake.start({})
    registry = ProviderRegistry()
    registry.add(LoadedProvider(fake, fake.manifest, HealthReport(Health.HEALTHY)))
    return registry


def sharpen() -> pb.EnhanceRequest:
    return pb.EnhanceRequest(
        image=common_pb2.ImageInput(data=png(photo((64, 64)))), kind=pb.ENHANCE_KIND_SHARPEN
    )


@pytest.mark.parametrize(
    ("steps", "grace", "finishes"),
    [(4, 5.0, True), (200, 0.3, False)],
    ids=["finishes-within-grace", "failed-after-grace"],
)
async def test_graceful_stop_finishes_or_fails_running_jobs(
    tmp_path: Path, steps: int, grace: float, finishes: bool
) -> None:
    config = ServerConfig(listen="127.0.0.1:0", data_dir=tmp_path, shutdown_grace_s=grace)
    server = await start_server(config, registry=await fake_registry(steps, 0.05))
    async with aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        edit = image_edit_pb2_grpc.ImageEditStub(channel)
        call = edit.Enhance(sharpen(), metadata=metadata())
        first = await read_one(call)
        stopping = asyncio.create_task(server.stop())
        if finishes:
            events = await read_all(call)
            assert events[-1].HasField("completed")
        else:
            with pytest.raises(aio.AioRpcError) as ended:
                await read_all(call)
            # The server's own status, which a client retries elsewhere, not gRPC's
            # "Cancelling all calls".
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "the server shut down before the job finished" in str(ended.value.details())
            assert any(isinstance(d, error_details_pb2.RetryInfo) for d in rpc_details(ended.value))
        await stopping
    state = await server_state_after_restart(config, first.job_id)
    assert state == (pb.JOB_STATE_SUCCEEDED if finishes else pb.JOB_STATE_FAILED)


async def test_an_edit_sent_while_jobs_drain_is_refused_for_another_replica(
    tmp_path: Path,
) -> None:
    config = ServerConfig(listen="127.0.0.1:0", data_dir=tmp_path, shutdown_grace_s=5.0)
    server = await start_server(config, registry=await fake_registry(200, 0.05))
    async with aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        edit = image_edit_pb2_grpc.ImageEditStub(channel)
        running = edit.Enhance(sharpen(), metadata=metadata())
        await read_one(running)
        stopping = asyncio.create_task(server.stop())
        health: Any = health_pb2_grpc.HealthStub(channel)
        while (await health.Check(health_pb2.HealthCheckRequest())).status == SERVING:
            pass  # each check is a round trip to the server, which starts stopping meanwhile
        with pytest.raises(aio.AioRpcError) as refused:
            await read_all(edit.Enhance(sharpen(), metadata=metadata()))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in str(refused.value.details())
        assert any(isinstance(d, error_details_pb2.RetryInfo) for d in rpc_details(refused.value))
        running.cancel()
        await stopping


async def server_state_after_restart(config: ServerConfig, job_id: str) -> int:
    server = await start_server(config, registry=ProviderRegistry())
    try:
        async with aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            job = await image_edit_pb2_grpc.ImageEditStub(channel).GetJob(
                pb.GetJobRequest(job_id=job_id), metadata=metadata()
            )
            return job.state
    finally:
        await server.stop()


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    process, port = spawn_server(tmp_path)
    yield process, port
    if process.poll() is None:
        process.kill()
        process.wait()


SERVING = health_pb2.HealthCheckResponse.SERVING

SHORT_LEASE = {"RETOUCH_JOB_LEASE_S": "1.0", "RETOUCH_JOB_HEARTBEAT_S": "0.2"}
"""Leases short enough that a killed server's jobs expire while a test waits."""


def spawn_server(
    data_dir: Path, config: Path | None = None, env_changes: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], int]:
    """``retouch-server`` as a real process on a free port; returns it and its port."""
    env = {
        **os.environ,
        "RETOUCH_DATA_DIR": str(data_dir),
        "RETOUCH_LISTEN": "127.0.0.1:0",
        **(env_changes or {}),
    }
    if config is not None:
        env["RETOUCH_CONFIG"] = str(config)
    process = subprocess.Popen(
        [sys.executable, "-m", "retouch.server"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        found = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if found:
            # Keep draining the log so the server never blocks on a full pipe.
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process, int(found.group(1))
    raise AssertionError(f"server exited with {process.wait()} before listening")


async def serving(port: int) -> AsyncIterator[aio.Channel]:
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(health_pb2.HealthCheckRequest())
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        yield channel


async def test_a_job_killed_with_its_server_fails_once_its_lease_expires(
    tmp_path: Path,
) -> None:
    process, port = spawn_server(tmp_path, env_changes=SHORT_LEASE)
    try:
        async for channel in serving(port):
            edit = image_edit_pb2_grpc.ImageEditStub(channel)
            slow = pb.EnhanceRequest(
                image=common_pb2.ImageInput(data=png(photo((1200, 1200)))),
                kind=pb.ENHANCE_KIND_DENOISE,
                strength=1.0,
            )
            call = edit.Enhance(slow, metadata=metadata())
            accepted = await read_one(call)
            process.send_signal(signal.SIGKILL)
            process.wait()
            with pytest.raises(aio.AioRpcError):
                await read_all(call)
    finally:
        if process.poll() is None:
            process.kill()
    process, port = spawn_server(tmp_path, env_changes=SHORT_LEASE)
    try:
        async for channel in serving(port):
            edit = image_edit_pb2_grpc.ImageEditStub(channel)
            # WatchJob follows the orphaned job until the new server fails it.
            with pytest.raises(aio.AioRpcError) as replay:
                async for _ in edit.WatchJob(
                    pb.WatchJobRequest(job_id=accepted.job_id), metadata=metadata()
                ):
                    pass
            assert replay.value.code() == grpc.StatusCode.UNAVAILABLE
            job = await edit.GetJob(pb.GetJobRequest(job_id=accepted.job_id), metadata=metadata())
            assert job.state == pb.JOB_STATE_FAILED
            assert job.error_code == "UNAVAILABLE"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0


async def test_sigterm_stops_the_server_cleanly(
    server_process: tuple[subprocess.Popen[str], int],
) -> None:
    process, port = server_process
    async for _ in serving(port):
        pass
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
