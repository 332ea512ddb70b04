"""The embedded figures beside the server from before issue 8, in the same run.

Issue 8 (replicas on shared engines) must leave the SQLite figures of ``make bench``
within 5 % of what they were. Two servers run at once on the embedded defaults: one
from :data:`~bench.baseline.BEFORE_SHARED_ENGINES`, one from the working tree. They
take turns (:func:`bench.interleave.turns`), one idle while the other is measured; a
turn is, on one server:

- sequential 1024x1024 inpaints, end to end;
- 64x64 inpaints paired with calls to the bare gRPC echo server (:mod:`bench.speed`'s
  fixed cost: the 64x64 job's p50 minus the echo's);
- 8 concurrent clients x 3 1024x1024 jobs; throughput is all such jobs over the time
  they took.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field

from retouch.v1 import image_edit_pb2_grpc

from . import client, interleave
from .baseline import BEFORE_SHARED_ENGINES, Served, before_and_now, describe, stubs
from .processes import echo_server
from .speed import concurrent_jobs
from .stats import Change, Summary
from .workload import Workload, make_workload

ROUNDS = 6
BIG_PER_TURN = 10
TINY_PER_TURN = 40
CLIENTS = 8
JOBS_PER_CLIENT = 3
WARMUP = 3
MAX_WORSE = 0.05


@dataclass(frozen=True, slots=True)
class SideFigures:
    """One server's embedded figures."""

    label: str
    big: Summary
    tiny: Summary
    echo: Summary
    burst_jobs: int
    burst_s: float

    @property
    def fixed_cost_ms(self) -> float:
        return self.tiny.p50 - self.echo.p50

    @property
    def jobs_per_s(self) -> float:
        return self.burst_jobs / self.burst_s


@dataclass(frozen=True, slots=True)
class EmbeddedComparison:
    """The baseline's figures and the working tree's."""

    baseline: SideFigures
    head: SideFigures

    def changes(self) -> list[Change]:
        before, after = self.baseline, self.head
        return [
            Change("1024x1024 inpaint p50", before.big.p50, after.big.p50, "ms", MAX_WORSE),
            Change(
                "64x64 inpaint p50", before.tiny.p50, after.tiny.p50, "ms", MAX_WORSE, decimals=2
            ),
            Change(
                "fixed cost p50: 64x64 job - bare gRPC echo",
                before.fixed_cost_ms,
                after.fixed_cost_ms,
                "ms",
                MAX_WORSE,
                decimals=2,
            ),
            Change(
                f"throughput, {CLIENTS} concurrent clients",
                before.jobs_per_s,
                after.jobs_per_s,
                "jobs/s",
                MAX_WORSE,
                higher_is_better=True,
            ),
        ]


@dataclass(slots=True)
class _Side:
    """One server and what its turns have measured so far."""

    served: Served
    stub: image_edit_pb2_grpc.ImageEditAsyncStub
    big_ms: list[float] = field(default_factory=list)
    tiny_ms: list[float] = field(default_factory=list)
    echo_ms: list[float] = field(default_factory=list)
    burst_jobs: int = 0
    burst_s: float = 0.0

    def figures(self) -> SideFigures:
        return SideFigures(
            self.served.source.label,
            Summary.of(self.big_ms),
            Summary.of(self.tiny_ms),
            Summary.of(self.echo_ms),
            self.burst_jobs,
            self.burst_s,
        )


async def run_embedded_baseline_bench() -> EmbeddedComparison:
    """Start both servers and the echo server, take the turns, stop them."""
    big, tiny = make_workload(1024), make_workload(64)
    with before_and_now(BEFORE_SHARED_ENGINES, "before issue 8") as (before, now):
        async with stubs(before, now) as (old, new):
            sides = (_Side(before, old), _Side(now, new))
            for side in sides:
                for _ in range(WARMUP):
                    await client.inpaint(side.stub, big.request())
                    await client.inpaint(side.stub, tiny.request())
            shape = await client.inpaint(sides[1].stub, tiny.request())
            with echo_server(len(shape.arrivals), shape.last_bytes) as echo_port:
                async with client.channel(echo_port) as echo_channel:
                    echo = client.Echo(echo_channel)
                    for side in interleave.turns(ROUNDS, *sides):
                        _say(f"a turn on {side.served.source.label}")
                        await _turn(side, echo, big, tiny)
    return EmbeddedComparison(sides[0].figures(), sides[1].figures())


async def _turn(side: _Side, echo: client.Echo, big: Workload, tiny: Workload) -> None:
    for _ in range(BIG_PER_TURN):
        side.big_ms.append(await client.total_ms(client.inpaint(side.stub, big.request())))
    payload = tiny.request().SerializeToString()
    tiny_ms, echo_ms = await interleave.pairs(
        TINY_PER_TURN,
        lambda: client.total_ms(client.inpaint(side.stub, tiny.request())),
        lambda: client.total_ms(echo(payload)),
    )
    side.tiny_ms += tiny_ms
    side.echo_ms += echo_ms
    burst = await concurrent_jobs(side.served.port, big, CLIENTS, JOBS_PER_CLIENT)
    side.burst_jobs += CLIENTS * JOBS_PER_CLIENT
    side.burst_s += burst.seconds


def render_embedded_baseline(comparison: EmbeddedComparison) -> str:
    """The speed section's comparison with the server from before issue 8."""
    before, after = comparison.baseline, comparison.head
    return "\n".join(
        [
            "### Embedded figures against the server from before issue 8, same run",
            "",
            f"{describe(before.label, after.label)} {ROUNDS} turns each, alternating "
            "(A B, B A, …), "
            f"one server idle while the other is measured; a turn is {BIG_PER_TURN} "
            f"sequential 1024x1024 jobs, {TINY_PER_TURN} 64x64 jobs paired with as many "
            f"bare gRPC echo calls, and {CLIENTS} concurrent clients x {JOBS_PER_CLIENT} "
            "1024x1024 jobs. Target: the working tree no more than "
            f"{MAX_WORSE:.0%} worse than the baseline.",
            "",
            "| figure | before issue 8 | HEAD | change | target | result |",
            "|---|---:|---:|---:|---|:---:|",
            *(change.row() for change in comparison.changes()),
            "",
            "| latency, p50 / p90 / mean (ms) | before issue 8 | HEAD |",
            "|---|---|---|",
            f"| 1024x1024, n={before.big.n} each | {before.big.text()} | {after.big.text()} |",
            f"| 64x64, n={before.tiny.n} each | {before.tiny.text()} | {after.tiny.text()} |",
            f"| bare gRPC echo, next to the 64x64 jobs | {before.echo.text()} "
            f"| {after.echo.text()} |",
            f"| {CLIENTS}-client bursts: jobs in seconds | {before.burst_jobs} in "
            f"{before.burst_s:.2f} s | {after.burst_jobs} in {after.burst_s:.2f} s |",
            "",
        ]
    )


def _say(message: str) -> None:
    print(f"bench: embedded baseline: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    print(render_embedded_baseline(asyncio.run(run_embedded_baseline_bench())))
