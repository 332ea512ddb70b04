"""Account calls: requests built from the arguments, answers turned into dataclasses.

They run against a fake Account servicer on a real grpc.aio server, so that only the
client's side of the contract is under test here.
"""

from __future__ import annotations

import datetime as dt
import uuid

import grpc
import pytest

from retouch.client import AsyncClient, Bucket, ExcludedProvider, PermissionDenied
from retouch.server.errors import PermissionDenied as ServerPermissionDenied
from retouch.server.errors import Unavailable as ServerUnavailable
from retouch.v1 import account_pb2
from tests.client.fakes import FakeAccount, Sleeps


async def test_usage_reads_plan_quota_credits_and_buckets() -> None:
    account = FakeAccount()

    async with (
        account.serve() as target,
        AsyncClient(target, api_key="k", subject="user:42") as client,
    ):
        usage = await client.get_usage()
        other = await client.get_usage(subject="user:7")

    assert usage.subject == "user:42"
    assert (usage.plan, usage.quota_limit, usage.quota_used, usage.quota_left) == (
        "free",
        100,
        3,
        97,
    )
    assert usage.quota_resets_at == dt.datetime.fromtimestamp(1_800_000_000, dt.UTC)
    assert (usage.credits_balance, usage.credits_reserved) == (50, 2)
    assert usage.buckets == (Bucket("subject", 5.0, 4.5, 1.0),)
    assert account.requests == [
        account_pb2.GetUsageRequest(),
        account_pb2.GetUsageRequest(subject="user:7"),
    ]
    assert other.subject == "user:7"
    assert account.metadata[0]["authorization"] == "Bearer k"
    assert account.metadata[0]["x-retouch-subject"] == "user:42"


async def test_grants_carry_an_idempotency_key_that_retries_reuse() -> None:
    account = FakeAccount(fail=[ServerUnavailable("restarting", retry_after=0.5).to_status()])
    sleeps = Sleeps()

    async with account.serve() as target, AsyncClient(target, api_key="k", sleep=sleeps) as client:
        balance = await client.grant_credits("user:9", 25, note="welcome")

    first, second = account.requests
    assert first == second
    assert (first.subject, first.credits, first.note) == ("user:9", 25, "welcome")
    uuid.UUID(first.request_id)
    assert sleeps.calls == [0.5]
    assert balance == 125


async def test_set_plan_returns_the_plan_now_in_force() -> None:
    account = FakeAccount()

    async with account.serve() as target, AsyncClient(target, api_key="k") as client:
        plan = await client.set_plan("user:9", "pro")

    assert plan == "pro"
    assert account.requests == [account_pb2.SetPlanRequest(subject="user:9", plan="pro")]


async def test_admin_refusals_carry_reason_and_metadata() -> None:
    refusal = ServerPermissionDenied(
        "only admin keys may set plans", reason="ADMIN_ONLY", metadata={"call": "SetPlan"}
    )
    account = FakeAccount(fail=[refusal.to_status()])

    async with account.serve() as target, AsyncClient(target, api_key="k") as client:
        with pytest.raises(PermissionDenied) as raised:
            await client.set_plan("user:9", "pro")

    assert raised.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert raised.value.reason == "ADMIN_ONLY"
    assert raised.value.metadata == {"call": "SetPlan"}
    assert len(account.requests) == 1


async def test_an_edit_can_be_quoted_with_the_request_it_would_send() -> None:
    account = FakeAccount()

    async with account.serve() as target, AsyncClient(target, api_key="k") as client:
        job = client.inpaint(b"image", mask=b"mask", prompt="sky", provider="fake", grow=4)
        quote = await job.quote()
        request = await job.request()

    (sent,) = account.requests
    assert sent.WhichOneof("edit") == "inpaint"
    assert sent.inpaint == request
    assert sent.inpaint.request_id == job.request_id
    assert (sent.inpaint.params.prompt, sent.inpaint.mask_options.grow_px) == ("sky", 4)
    assert sent.inpaint.provider.provider == "fake"
    assert not quote.allowed
    assert (quote.provider, quote.model, quote.estimated_cost_credits) == ("fake", "m", 4)
    assert quote.routing.candidates == ("fake", "other")
    assert quote.routing.excluded == (ExcludedProvider("pricey", "costs 8 credits"),)
    assert quote.routing.prefer == "cost"
    assert quote.refusal is not None
    assert (quote.refusal.code, quote.refusal.reason) == ("RESOURCE_EXHAUSTED", "CREDITS_EXHAUSTED")
    assert quote.refusal.retry_after is None
