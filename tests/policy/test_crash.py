"""A server killed with SIGKILL mid-job: once its lease expires, the job fails and is refunded."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from grpc import aio

from retouch.server.config import hash_key
from retouch.v1 import account_pb2, account_pb2_grpc, common_pb2, image_edit_pb2_grpc
from retouch.v1 import image_edit_pb2 as pb
from tests.e2e.test_lifecycle import SHORT_LEASE, serving, spawn_server
from tests.helpers import metadata, photo, png, read_all, read_one

CONFIG = f"""
[plans.paid]
credits = true
monthly_jobs = 10

[[tenants]]
name = "dev"
key_sha256 = "{hash_key("retouch-dev-key")}"
admin = true
default_plan = "paid"
"""


async def test_sigkill_mid_job_refunds_once_the_lease_expires(tmp_path: Path) -> None:
    config = tmp_path / "retouch.toml"
    config.write_text(CONFIG)
    subject = metadata(subject="user:kim")
    process, port = spawn_server(tmp_path / "data", config, SHORT_LEASE)
    try:
        async for channel in serving(port):
            account: Any = account_pb2_grpc.AccountStub(channel)
            await account.GrantCredits(
                account_pb2.GrantCreditsRequest(subject="user:kim", credits=5),
                metadata=metadata(),
            )
            edit: Any = image_edit_pb2_grpc.ImageEditStub(channel)
            slow = pb.EnhanceRequest(
                image=common_pb2.ImageInput(data=png(photo((1200, 1200)))),
                kind=pb.ENHANCE_KIND_DENOISE,
                strength=1.0,
            )
            call = edit.Enhance(slow, metadata=subject)
            accepted = await read_one(call)
            during = await account.GetUsage(account_pb2.GetUsageRequest(), metadata=subject)
            assert (during.credits_balance, during.credits_reserved) == (4, 1)
            process.send_signal(signal.SIGKILL)
            process.wait()
            with pytest.raises(aio.AioRpcError):
                await read_all(call)
    finally:
        if process.poll() is None:
            process.kill()
    process, port = spawn_server(tmp_path / "data", config, SHORT_LEASE)
    try:
        async for channel in serving(port):
            account = account_pb2_grpc.AccountStub(channel)
            edit = image_edit_pb2_grpc.ImageEditStub(channel)
            with pytest.raises(aio.AioRpcError):
                await read_all(
                    edit.WatchJob(pb.WatchJobRequest(job_id=accepted.job_id), metadata=subject)
                )
            job = await edit.GetJob(pb.GetJobRequest(job_id=accepted.job_id), metadata=subject)
            assert job.state == pb.JOB_STATE_FAILED
            assert job.cost_credits == 0
            after = await account.GetUsage(account_pb2.GetUsageRequest(), metadata=subject)
            assert (after.credits_balance, after.credits_reserved, after.quota_used) == (5, 0, 0)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
