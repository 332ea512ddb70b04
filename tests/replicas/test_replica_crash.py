"""``kill -9`` of the replica running a job: the other replica fails and refunds it once
its lease has expired, within twice the lease."""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path

import grpc
import pytest
from grpc import aio

from retouch.server.app import running
from retouch.server.config import hash_key, load_config
from retouch.v1 import account_pb2, account_pb2_grpc, common_pb2, image_edit_pb2_grpc
from retouch.v1 import image_edit_pb2 as pb
from tests.e2e.test_lifecycle import serving, spawn_server
from tests.engines.postgres import PostgresServer
from tests.helpers import metadata, photo, png, read_all, read_one

LEASE_S = 1.0
SUBJECT = "user:kai"


def config_file(tmp_path: Path, database: str, rate_limiter: str, object_store: str) -> Path:
    path = tmp_path / "retouch.toml"
    path.write_text(
        f"""
environment = "test"
database = "{database}"
rate_limiter = "{rate_limiter}"
object_store = "{object_store}"
results_http_listen = "127.0.0.1:0"
job_lease_s = {LEASE_S}
job_heartbeat_s = 0.2

[plans.paid]
credits = true
credits_per_job = 1
monthly_jobs = 10

[[tenants]]
name = "dev"
key_sha256 = "{hash_key("retouch-dev-key")}"
admin = true
default_plan = "paid"
"""
    )
    return path


async def test_killing_the_replica_running_a_job_lets_the_other_fail_and_refund_it(
    tmp_path: Path, postgres: PostgresServer, redis_url: str, s3_url: str
) -> None:
    path = config_file(tmp_path, postgres.new_database(), redis_url, s3_url)
    survivor_config = dataclasses.replace(
        load_config(path, environ={}), listen="127.0.0.1:0", data_dir=tmp_path / "survivor"
    )
    process, port = spawn_server(tmp_path / "doomed", path)
    try:
        async with running(survivor_config) as survivor:
            async with aio.insecure_channel(f"127.0.0.1:{survivor.port}") as channel:
                account = account_pb2_grpc.AccountStub(channel)
                edit = image_edit_pb2_grpc.ImageEditStub(channel)
                await account.GrantCredits(
                    account_pb2.GrantCreditsRequest(subject=SUBJECT, credits=5), metadata=metadata()
                )
                async for doomed in serving(port):
                    slow = pb.EnhanceRequest(
                        image=common_pb2.ImageInput(data=png(photo((1200, 1200)))),
                        kind=pb.ENHANCE_KIND_DENOISE,
                        strength=1.0,
                    )
                    call = image_edit_pb2_grpc.ImageEditStub(doomed).Enhance(
                        slow, metadata=metadata(subject=SUBJECT)
                    )
                    accepted = await read_one(call)
                    during = await account.GetUsage(
                        account_pb2.GetUsageRequest(), metadata=metadata(subject=SUBJECT)
                    )
                    price = accepted.accepted.estimated_cost_credits
                    assert price > 0
                    assert (during.credits_balance, during.credits_reserved) == (5 - price, price)
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                    with pytest.raises(aio.AioRpcError):
                        await read_all(call)
                # The survivor's WatchJob follows the orphaned job until its lease expires.
                with pytest.raises(aio.AioRpcError) as ended:
                    await read_all(
                        edit.WatchJob(
                            pb.WatchJobRequest(job_id=accepted.job_id),
                            metadata=metadata(subject=SUBJECT),
                        )
                    )
                assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
                after = await account.GetUsage(
                    account_pb2.GetUsageRequest(), metadata=metadata(subject=SUBJECT)
                )
                assert (after.credits_balance, after.credits_reserved, after.quota_used) == (
                    5,
                    0,
                    0,
                )
            record = await survivor.store.get_job(accepted.job_id)
            assert record is not None
            assert record.replica_id != survivor.jobs.replica_id
            assert record.error_code == "UNAVAILABLE"
            # Failed within one lease of the lease's end: within twice the lease of the
            # dead replica's last renewal.
            assert 0 <= record.updated_at - record.lease_until <= LEASE_S
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
