"""Resilience bench: how fast a job is refused when every provider's breaker is open.

Two hosted providers fail once each, which opens their breakers (``failures = 1``, a
long cool-down); every later Inpaint is refused with UNAVAILABLE over real gRPC on
loopback, call after call, without reaching either provider. Target: p50 <= 5 ms, for
the bench photo at 64² and at 1024² (a ~1.5 MB PNG the call still has to carry).
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from retouch.sdk import CostModel, Health, HealthReport, Operation, ProviderUnavailable
from retouch.sdk.testing import FakeProvider
from retouch.server.app import running
from retouch.server.breaker import BreakerSettings
from retouch.server.config import DEV_API_KEY, DEV_TENANT, ServerConfig
from retouch.server.policy import Plan, PlanBook
from retouch.server.registry import LoadedProvider, ProviderRegistry
from retouch.v1 import common_pb2, image_edit_pb2_grpc
from retouch.v1 import image_edit_pb2 as pb

from .stats import Summary
from .workload import make_workload

CALLS = 300
REFUSAL_TARGET_MS = 5.0
PLAN = Plan("bench", paid_providers=True, rate_per_s=1e6, burst=10**6)
TRIP_AT_ONCE = BreakerSettings(failures=1, window_s=60.0, cooldown_s=86_400.0)
METADATA = (("authorization", f"Bearer {DEV_API_KEY}"), ("x-retouch-subject", "user:bench"))


@dataclass(frozen=True, slots=True)
class ResilienceFigures:
    """Refusal latency with every breaker open, by input size."""

    refusals: dict[str, Summary]
    provider_calls: int
    """Calls that reached a provider during the refusals (must be 0)."""


def _request(side: int) -> pb.InpaintRequest:
    workload = make_workload(side)
    return pb.InpaintRequest(
        image=common_pb2.ImageInput(data=workload.image_png),
        mask=common_pb2.ImageInput(data=workload.mask_png),
    )


async def run_resilience_bench() -> ResilienceFigures:
    fakes = [
        FakeProvider(
            name,
            [Operation.INPAINT],
            remote=True,
            cost=CostModel(credits_per_job=1),
            fail_with=ProviderUnavailable("upstream answered 503"),
        )
        for name in ("hosted-a", "hosted-b")
    ]
    registry = ProviderRegistry()
    for fake in fakes:
        await fake.start({})
        registry.add(LoadedProvider(fake, fake.manifest, HealthReport(Health.HEALTHY)))
    with tempfile.TemporaryDirectory(prefix="retouch-resilience-bench-") as tmp:
        config = ServerConfig(
            listen="127.0.0.1:0",
            data_dir=Path(tmp),
            environment="staging",
            tls_terminated_upstream=True,  # loopback plaintext, as behind a TLS proxy
            plans=PlanBook({PLAN.name: PLAN}),
            tenants=(
                dataclasses.replace(
                    DEV_TENANT, default_plan=PLAN.name, rate_per_s=1e6, burst=10**6
                ),
            ),
            circuit_breakers={fake.manifest.name: TRIP_AT_ONCE for fake in fakes},
        )
        async with (
            running(config, registry=registry) as server,
            aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
        ):
            edit: Any = image_edit_pb2_grpc.ImageEditStub(channel)
            await _refused(edit, _request(64))  # opens both breakers
            tripped = sum(f.calls for f in fakes)
            refusals = {}
            for label, side in (("64² photo PNG", 64), ("1024² photo PNG", 1024)):
                request = _request(side)
                samples = []
                for _ in range(CALLS):
                    started = time.perf_counter()
                    await _refused(edit, request)
                    samples.append((time.perf_counter() - started) * 1000)
                refusals[label] = Summary.of(samples[20:])
    return ResilienceFigures(refusals, sum(f.calls for f in fakes) - tripped)


async def _refused(edit: Any, request: pb.InpaintRequest) -> None:
    try:
        async for _ in edit.Inpaint(request, metadata=METADATA):
            pass
    except aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.UNAVAILABLE:
            raise
        return
    raise AssertionError("the job ran although every provider's breaker was open")


def render_resilience(figures: ResilienceFigures) -> str:
    """The resilience section of RESULTS.md."""
    rows = [
        f"| refusal, every breaker open, {label} | {s.p50:.2f} / {s.p90:.2f} / {s.mean:.2f} "
        f"| p50 <= {REFUSAL_TARGET_MS:g} ms | "
        f"{'PASS' if s.p50 <= REFUSAL_TARGET_MS else 'MISS'} |"
        for label, s in figures.refusals.items()
    ]
    return "\n".join(
        [
            "## Resilience (circuit breakers)",
            "",
            "Inpaint over gRPC on loopback while both hosted providers' breakers are open:",
            "",
            "| figure | p50 / p90 / mean (ms) | target | verdict |",
            "|---|---|---|---|",
            *rows,
            "",
            f"Calls that reached a provider during the refusals: {figures.provider_calls}.",
            "",
        ]
    )


if __name__ == "__main__":
    print(render_resilience(asyncio.run(run_resilience_bench())))
