"""Fairness under a flood: one tenant keeps 32 jobs in flight, another sends one at a time.

Issue 10: one tenant's burst must not starve another's single job; the second tenant's
p50 latency stays within 2x its unloaded p50. One server on the embedded defaults with
a second tenant (its own API key, so its own caller) beside the development one. The
second tenant runs its jobs one after another in phases, alone (unloaded) or while the
development tenant floods (32 streams, each starting its next job as soon as its
last ends); the phases take turns (:func:`bench.interleave.turns`) so that load
drifting during the run weighs on both alike.

The flood runs in a process of its own (:mod:`bench.flood`), as a flooding caller on
another machine would: on this process's event loop the second tenant's jobs would also
wait while the loop serialized the flood's requests and received its results, which
measures the bench, not the server. Each flooded phase starts once the server holds a
job of every flood stream, and its first job is still not counted: the flood is filling
the queue then. The flood lets its jobs in flight end before the next phase.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from retouch.server.config import hash_key
from retouch.v1 import image_edit_pb2_grpc

from . import client, interleave
from .flood import flood_process
from .processes import retouch_server
from .stats import Summary
from .workload import Workload, make_workload

SIDE = 512
FLOOD = 32
ROUNDS = 4
JOBS_PER_PHASE = 8
WARMUP = 3
MAX_RATIO = 2.0

SECOND_KEY = "retouch-bench-second-tenant"
SECOND_TENANT = f"""\
[[tenants]]
name = "second"
key_sha256 = "{hash_key(SECOND_KEY)}"
default_plan = "bench"
rate_per_s = 1e6
burst = 1000000
"""
"""A tenant of its own for the single jobs, on the bench plan like the development one."""
SECOND = (("authorization", f"Bearer {SECOND_KEY}"), ("x-retouch-subject", "user:second"))

_UNLOADED, _FLOODED = "unloaded", "flooded"


@dataclass(frozen=True, slots=True)
class FairnessFigures:
    """The second tenant's latencies alone and under the flood, and the flood's own."""

    unloaded: Summary
    flooded: Summary
    flood: Summary

    @property
    def ratio(self) -> float:
        return self.flooded.p50 / self.unloaded.p50

    @property
    def passed(self) -> bool:
        return self.ratio <= MAX_RATIO


async def run_fairness_bench(
    *,
    side: int = SIDE,
    flood: int = FLOOD,
    rounds: int = ROUNDS,
    jobs_per_phase: int = JOBS_PER_PHASE,
    warmup: int = WARMUP,
) -> FairnessFigures:
    """Start the server and the flood's process, take the turns, stop them."""
    workload = make_workload(side)
    with (
        tempfile.TemporaryDirectory(prefix="retouch-fairness-") as data,
        retouch_server(Path(data), tables=SECOND_TENANT) as port,
    ):
        async with (
            flood_process(port, streams=flood, side=side, warmup=warmup) as flooding,
            client.channel(port) as single,
        ):
            stub = image_edit_pb2_grpc.ImageEditStub(single)
            for _ in range(warmup):
                await client.inpaint(stub, workload.request(), SECOND)
            times: dict[str, list[float]] = {_UNLOADED: [], _FLOODED: []}
            for phase in interleave.turns(rounds, _UNLOADED, _FLOODED):
                _say(f"{jobs_per_phase} jobs of the second tenant, {phase}")
                if phase == _UNLOADED:
                    times[phase] += await _one_at_a_time(stub, workload, jobs_per_phase)
                    continue
                async with flooding.flooding():
                    await client.inpaint(stub, workload.request(), SECOND)
                    times[phase] += await _one_at_a_time(stub, workload, jobs_per_phase)
    return FairnessFigures(
        Summary.of(times[_UNLOADED]),
        Summary.of(times[_FLOODED]),
        Summary.of(flooding.latency_ms),
    )


async def _one_at_a_time(
    stub: image_edit_pb2_grpc.ImageEditAsyncStub, workload: Workload, jobs: int
) -> list[float]:
    return [
        await client.total_ms(client.inpaint(stub, workload.request(), SECOND)) for _ in range(jobs)
    ]


def render_fairness(figures: FairnessFigures) -> str:
    """The fairness section of RESULTS.md."""
    unloaded, flooded = figures.unloaded, figures.flooded
    verdict = "PASS" if figures.passed else "MISS"
    return "\n".join(
        [
            "## Fairness: one tenant floods, another sends one job at a time",
            "",
            f"{SIDE}x{SIDE} PNG inpaints on opencv, inline results, one server on the "
            "embedded defaults with a second tenant (its own API key) beside the "
            f"development one. The second tenant sends {JOBS_PER_PHASE} jobs one after "
            f"another per phase, {ROUNDS} phases alone and {ROUNDS} while the development "
            f"tenant keeps {FLOOD} jobs in flight, alternating (A B, B A, …). The flood "
            "runs in a process of its own (`python -m bench.flood`), as a caller on another "
            "machine would: on the bench's event loop, serializing its requests and "
            "receiving its results would delay the second tenant's calls too. A flooded "
            "phase starts once the server holds a job of every flood stream; its first "
            "job, sent while the flood fills the queue, is not counted.",
            "",
            "| figure | value | target | verdict |",
            "|---|---|---|---|",
            f"| second tenant p50, flooded / unloaded | {figures.ratio:.2f}x "
            f"({flooded.p50:.1f} / {unloaded.p50:.1f} ms) | <= {MAX_RATIO:g}x | {verdict} |",
            "",
            "| latency, p50 / p90 / mean (ms) | n | |",
            "|---|---:|---|",
            f"| second tenant, unloaded | {unloaded.n} | {unloaded.text()} |",
            f"| second tenant, during the flood | {flooded.n} | {flooded.text()} |",
            f"| flooding tenant's jobs ({FLOOD} in flight) | {figures.flood.n} "
            f"| {figures.flood.text()} |",
            "",
        ]
    )


def _say(message: str) -> None:
    print(f"bench: fairness: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    print(render_fairness(asyncio.run(run_fairness_bench())))
