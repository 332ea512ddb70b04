"""Policy bench: what plans, token buckets and the SQLite ledger cost per decision.

Two figures, each against a baseline from the same run:
- the decision itself (plan lookup, caps, buckets, routing, reservation, settlement),
  timed in-process call by call, p50 target <= 1 ms;
- jobs per second through the service under 32 concurrent streams, on a plan that
  charges credits against a quota and on an unmetered one (no credits, no quota, no
  practical rate limit), on a provider that does no work, so the metering's share is
  what remains.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from grpc import aio
from numpy.typing import NDArray

from retouch.sdk import CostModel, Health, HealthReport, Operation
from retouch.sdk.testing import FakeProvider
from retouch.server.app import running
from retouch.server.auth import Caller
from retouch.server.config import DEV_API_KEY, DEV_TENANT, ServerConfig
from retouch.server.edits import InspectedEdit, OutputSpec
from retouch.server.inputs import InputFile
from retouch.server.policy import EditIntent, Plan, PlanBook, check_pixels
from retouch.server.registry import LoadedProvider, ProviderRegistry
from retouch.server.routing import RouteRequest
from retouch.v1 import account_pb2, account_pb2_grpc, common_pb2, image_edit_pb2_grpc
from retouch.v1 import image_edit_pb2 as pb

from .stats import Summary

STREAMS = 32
SECONDS = 3.0
DECISIONS = 2000
PLAN = Plan("bench", credits=True, rate_per_s=1e6, burst=10**6, monthly_jobs=10**9)
UNMETERED = Plan("unmetered", rate_per_s=1e6, burst=10**6)
DECISION_TARGET_MS = 1.0


@dataclass(frozen=True, slots=True)
class PolicyFigures:
    """What the policy bench measured."""

    decision: Summary
    settle: Summary
    with_policy_jobs_s: float
    without_policy_jobs_s: float


async def _registry() -> ProviderRegistry:
    fake = FakeProvider("fast", [Operation.INPAINT], steps=1, cost=CostModel(credits_per_job=1))
    await fake.start({})
    registry = ProviderRegistry()
    registry.add(LoadedProvider(fake, fake.manifest, HealthReport(Health.HEALTHY)))
    return registry


def _config(data_dir: Path, plan: Plan = PLAN, database: str = "") -> ServerConfig:
    return ServerConfig(
        listen="127.0.0.1:0",
        data_dir=data_dir,
        database=database,
        environment="test",
        plans=PlanBook({plan.name: plan}),
        tenants=(
            dataclasses.replace(DEV_TENANT, default_plan=plan.name, rate_per_s=1e6, burst=10**6),
        ),
    )


async def decisions(data_dir: Path, database: str = "") -> tuple[Summary, Summary]:
    """The decision and the settlement, call by call, on ``database`` (default SQLite)."""
    async with running(_config(data_dir, database=database), registry=await _registry()) as server:
        pipeline = server.pipeline
        policy: Any = pipeline._policy
        caller = Caller("dev", "user:bench", admin=True)
        await server.ledger.grant(caller.owner, 10**9, request_id="", note="bench", now=0)
        prepared = InspectedEdit(
            operation=Operation.INPAINT,
            route=RouteRequest(Operation.INPAINT, 512, 512),
            output_size=(512, 512),
            output=OutputSpec("PNG", 90, False),
            seed=1,
            request=pb.InpaintRequest(),
            image=InputFile(b""),
        )
        intent = EditIntent(output_format="PNG")
        decide, settle = [], []
        for index in range(DECISIONS):
            started = time.perf_counter()
            plan = await policy.plan_for(caller)
            await policy.admit(caller, plan, intent)
            check_pixels(plan, 512, 512)
            route = await pipeline.route(prepared, plan)
            await policy.reserve(f"job_bench{index}", caller, plan, route.candidates[0].price)
            decided = time.perf_counter()
            await policy.ledger.commit(f"job_bench{index}", 1, now=0)
            settle.append((time.perf_counter() - decided) * 1000)
            decide.append((decided - started) * 1000)
        return Summary.of(decide[100:]), Summary.of(settle[100:])


async def _throughput(data_dir: Path, plan: Plan) -> float:
    request = pb.InpaintRequest(
        image=common_pb2.ImageInput(data=encode_png(_tiny())),
        mask=common_pb2.ImageInput(data=encode_png(_tiny_mask())),
    )
    metadata = (("authorization", f"Bearer {DEV_API_KEY}"), ("x-retouch-subject", "user:bench"))
    async with running(_config(data_dir, plan), registry=await _registry()) as server:
        target = f"127.0.0.1:{server.port}"
        async with aio.insecure_channel(target) as channel:
            account: Any = account_pb2_grpc.AccountStub(channel)
            await account.GrantCredits(
                account_pb2.GrantCreditsRequest(subject="user:bench", credits=10**9),
                metadata=(("authorization", f"Bearer {DEV_API_KEY}"),),
            )
        done = 0
        deadline = time.perf_counter() + SECONDS

        async def stream() -> None:
            nonlocal done
            async with aio.insecure_channel(target) as channel:
                edit: Any = image_edit_pb2_grpc.ImageEditStub(channel)
                while time.perf_counter() < deadline:
                    async for _ in edit.Inpaint(request, metadata=metadata):
                        pass
                    done += 1

        started = time.perf_counter()
        await asyncio.gather(*(stream() for _ in range(STREAMS)))
        return done / (time.perf_counter() - started)


def _tiny() -> NDArray[np.uint8]:
    return np.full((32, 32, 3), 128, np.uint8)


def _tiny_mask() -> NDArray[np.uint8]:
    mask = np.zeros((32, 32), np.uint8)
    mask[8:16, 8:16] = 255
    return mask


def encode_png(pixels: NDArray[np.uint8]) -> bytes:
    ok, encoded = cv2.imencode(".png", pixels)
    assert ok
    return encoded.tobytes()


async def run_policy_bench() -> PolicyFigures:
    """Measure the decision, then throughput with and without metering."""
    with tempfile.TemporaryDirectory(prefix="retouch-policy-bench-") as tmp:
        root = Path(tmp)
        decision, settle = await decisions(root / "decisions")
        without = await _throughput(root / "without", UNMETERED)
        with_policy = await _throughput(root / "with", PLAN)
    return PolicyFigures(decision, settle, with_policy, without)


def render_policy(figures: PolicyFigures) -> str:
    """The policy section of RESULTS.md."""
    verdict = "PASS" if figures.decision.p50 <= DECISION_TARGET_MS else "MISS"
    ratio = figures.with_policy_jobs_s / figures.without_policy_jobs_s
    return "\n".join(
        [
            "## Policy (plans, token buckets, SQLite ledger)",
            "",
            "| figure | p50 / p90 / mean (ms) | target | verdict |",
            "|---|---|---|---|",
            f"| decision: plan, caps, buckets, route, reserve | {_ms(figures.decision)} "
            f"| p50 <= {DECISION_TARGET_MS:g} ms | {verdict} |",
            f"| settlement: commit of the charge | {_ms(figures.settle)} | — | — |",
            "",
            f"{STREAMS} concurrent streams for {SECONDS:g} s, a provider that does no work:",
            "",
            "| run | jobs (decisions) per second |",
            "|---|---|",
            f"| unmetered plan (baseline) | {figures.without_policy_jobs_s:.0f} |",
            f"| credits and quota | {figures.with_policy_jobs_s:.0f} ({ratio:.0%} of baseline) |",
            "",
        ]
    )


def _ms(summary: Summary) -> str:
    return f"{summary.p50:.3f} / {summary.p90:.3f} / {summary.mean:.3f}"


if __name__ == "__main__":
    print(render_policy(asyncio.run(run_policy_bench())))
