"""The server's CPU per job, before the pixel-path changes and now, in the same run.

Issue 10 asks the pixel-path changes to take 15 % less of the server's CPU per 1024x1024
PNG inpaint on opencv. Two servers run at once on the embedded defaults
(:func:`bench.baseline.before_and_now`): one from
:data:`~bench.baseline.BEFORE_PIXEL_PATH`, one from the working tree. After a warm-up
they take turns (:func:`bench.interleave.turns`) of sequential jobs, one idle while the
other works. A turn's CPU is the user + system time that the server process, all its
threads, and any process under it (a process pool would count) spent across it, read
from ``/proc/<pid>/stat``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from retouch.v1 import image_edit_pb2_grpc

from . import client, interleave
from .baseline import BEFORE_PIXEL_PATH, Served, before_and_now, describe, stubs
from .stats import Change, Summary
from .workload import make_workload

ROUNDS = 4
JOBS_PER_TURN = 5
WARMUP = 3
MAX_WORSE = -0.15
"""At least 15 % less CPU per job."""
SIDE = 1024
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class CpuFigures:
    """One server's CPU seconds over its measured jobs, and those jobs' latencies."""

    label: str
    jobs: int
    cpu_s: float
    latency: Summary

    @property
    def cpu_ms_per_job(self) -> float:
        return 1000 * self.cpu_s / self.jobs


@dataclass(frozen=True, slots=True)
class CpuComparison:
    baseline: CpuFigures
    head: CpuFigures

    def change(self) -> Change:
        return Change(
            f"server CPU per {SIDE}x{SIDE} PNG inpaint (opencv)",
            self.baseline.cpu_ms_per_job,
            self.head.cpu_ms_per_job,
            "ms",
            MAX_WORSE,
            decimals=0,
        )


def cpu_seconds(pid: int, proc: Path = Path("/proc")) -> float:
    """User + system CPU seconds of process ``pid`` (every thread), of the processes
    under it, and of the children they have already reaped."""
    ticks: dict[int, int] = {}
    parents: dict[int, int] = {}
    for stat in proc.glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we looked
            continue
        # Fields after the command name, which may hold spaces: state ppid … utime stime
        # cutime cstime (fields 3, 4, 14-17 of proc(5)).
        fields = text[text.rindex(")") + 2 :].split()
        process = int(stat.parent.name)
        parents[process] = int(fields[1])
        ticks[process] = sum(int(value) for value in fields[11:15])
    if pid not in ticks:
        raise RuntimeError(f"process {pid} is not running")
    tree, grew = {pid}, True
    while grew:
        below = {child for child, parent in parents.items() if parent in tree} - tree
        tree |= below
        grew = bool(below)
    return sum(ticks[process] for process in tree) / _TICKS_PER_S


@dataclass(slots=True)
class _Side:
    served: Served
    stub: image_edit_pb2_grpc.ImageEditAsyncStub
    cpu_s: float = 0.0
    latency_ms: list[float] = field(default_factory=list)

    def figures(self) -> CpuFigures:
        return CpuFigures(
            self.served.source.label,
            len(self.latency_ms),
            self.cpu_s,
            Summary.of(self.latency_ms),
        )


async def run_server_cpu_bench() -> CpuComparison:
    """Start both servers, take the turns, stop them."""
    workload = make_workload(SIDE)
    with before_and_now(BEFORE_PIXEL_PATH, "before the pixel-path changes") as (before, now):
        async with stubs(before, now) as (old, new):
            sides = (_Side(before, old), _Side(now, new))
            for side in sides:
                for _ in range(WARMUP):
                    await client.inpaint(side.stub, workload.request())
            for side in interleave.turns(ROUNDS, *sides):
                _say(f"{JOBS_PER_TURN} jobs on {side.served.source.label}")
                started = cpu_seconds(side.served.pid)
                for _ in range(JOBS_PER_TURN):
                    trace = await client.inpaint(side.stub, workload.request())
                    side.latency_ms.append(trace.total_ms)
                side.cpu_s += cpu_seconds(side.served.pid) - started
    return CpuComparison(sides[0].figures(), sides[1].figures())


def render_server_cpu(comparison: CpuComparison) -> str:
    """The server CPU section of RESULTS.md."""
    before, after = comparison.baseline, comparison.head
    return "\n".join(
        [
            "## Server CPU per job, before the pixel-path changes and now",
            "",
            f"{describe(before.label, after.label)} After {WARMUP} warm-up jobs each, {ROUNDS} "
            f"turns each of {JOBS_PER_TURN} sequential {SIDE}x{SIDE} PNG inpaints on "
            "opencv, alternating (A B, B A, …), one server idle while the other works. "
            "CPU is the server process's user + system time across its turns (all "
            "threads, and any process under it), from `/proc/<pid>/stat`.",
            "",
            "| figure | before | HEAD | change | target | result |",
            "|---|---:|---:|---:|---|:---:|",
            comparison.change().row(),
            "",
            "| server | jobs | CPU (s) | latency p50 / p90 / mean (ms) |",
            "|---|---:|---:|---|",
            *(
                f"| `{figures.label}` | {figures.jobs} | {figures.cpu_s:.2f} "
                f"| {figures.latency.text()} |"
                for figures in (before, after)
            ),
            "",
        ]
    )


def _say(message: str) -> None:
    print(f"bench: server CPU: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    print(render_server_cpu(asyncio.run(run_server_cpu_bench())))
