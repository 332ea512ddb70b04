"""Server CPU per job, and where one job's pixel work spends it, against another tree.

``python -m bench.pixel_cpu [--baseline TREE]`` measures the 1024x1024 PNG inpaint
(opencv/telea, inline result) of :mod:`bench.workload` two ways:

- ``steps``: the server's pixel work in this process, one function per step (decode,
  mask preparation, the provider, compositing, encoding), and on the side a hosted
  provider's answer fitted and composited: CPU and wall time, and the peak of memory
  allocated (tracemalloc) during each step.
- ``server``: ``python -m retouch.server`` in its own process, fed jobs one at a time
  from this one; its CPU time (user + system, every thread) read from ``/proc``
  around each batch of jobs.

With ``--baseline``, a checkout of another commit (``git worktree add --detach`` or
``git archive``), both are measured in the same run: the baseline's packages come
first on ``PYTHONPATH`` in its processes, and servers and step runs alternate, so
that both see the same machine load.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, aclosing, contextmanager
from pathlib import Path
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from retouch.providers.opencv import OpenCVProvider
from retouch.sdk import (
    GenerationParams,
    InpaintRequest,
    JobContext,
    Operation,
    Result,
    fit_to_request,
)
from retouch.server.edits import (
    InpaintSpec,
    OutputSpec,
    PreparedEdit,
    SourceFiles,
    keep_unedited,
)
from retouch.server.imaging import decode_image, decode_mask_levels, encode_image, prepare_mask
from retouch.server.routing import RouteRequest
from retouch.v1 import image_edit_pb2_grpc

from . import client
from .processes import ROOT, retouch_server
from .workload import Workload, make_workload

T = TypeVar("T")

SOURCE_DIRS = (
    "server/src",
    "plugins/sdk/src",
    "plugins/opencv/src",
    "plugins/patchmatch/src",
    "plugins/rest/src",
    "plugins/replicate/src",
    "plugins/workers-ai/src",
    "plugins/stability/src",
    "plugins/openai/src",
    "clients/python/src",
)
STEPS = ("decode", "mask", "provider", "composite", "encode")
_TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def tree_env(tree: Path | None) -> dict[str, str]:
    """Environment that makes a Python process import retouch from ``tree``."""
    if tree is None:
        return {}
    paths = [str(tree / d) for d in SOURCE_DIRS]
    inherited = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": os.pathsep.join([*paths, *([inherited] if inherited else [])])}


def process_cpu_ms(pid: int) -> float:
    """User + system CPU of every thread of ``pid`` so far, in ms (clock-tick resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * _TICK_MS


def _measured(work: Callable[[], T]) -> tuple[T, dict[str, float]]:
    tracemalloc.start()
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        value = work()
        cpu_ms = 1000 * (time.process_time() - cpu)
        wall_ms = 1000 * (time.perf_counter() - wall)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return value, {"cpu": cpu_ms, "wall": wall_ms, "peak_mb": peak / 1e6}


async def _step_run(workload: Workload, provider: OpenCVProvider) -> dict[str, dict[str, float]]:
    """One job's pixel work through the server's own functions, each step measured."""
    limit = 1 << 26
    figures: dict[str, dict[str, float]] = {}
    image, figures["decode"] = _measured(
        lambda: decode_image(workload.image_png, field="image", max_pixels=limit)
    )

    def mask_step() -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
        levels = decode_mask_levels(
            workload.mask_png, field="mask", size=(image.width, image.height), max_pixels=limit
        )
        mask = prepare_mask(levels.levels, invert=False, grow_px=0, feather_px=0)
        np.count_nonzero(mask.binary)
        levels.forwardable(mask.binary)
        return mask.binary, mask.alpha

    (binary, blend), figures["mask"] = _measured(mask_step)
    pristine = image.pixels.copy()
    edit = _inpaint_edit(image.pixels, binary, blend)
    request = InpaintRequest(image=image.pixels, mask=binary, model="telea", seed=0)
    tracemalloc.start()
    cpu, wall = time.process_time(), time.perf_counter()
    result: Result | None = None
    async with aclosing(provider.run(request, JobContext("pixel-cpu"))) as events:
        async for event in events:
            if isinstance(event, Result):
                result = event
    figures["provider"] = {
        "cpu": 1000 * (time.process_time() - cpu),
        "wall": 1000 * (time.perf_counter() - wall),
        "peak_mb": tracemalloc.get_traced_memory()[1] / 1e6,
    }
    tracemalloc.stop()
    assert result is not None
    edited = result.image
    finished, figures["composite"] = _measured(lambda: keep_unedited(edit, edited))
    # As the store stage calls it; a baseline from before in_place encodes into a copy.
    encode = functools.partial(encode_image, finished, "PNG", 90)
    if "in_place" in inspect.signature(encode_image).parameters:
        encode = functools.partial(encode, in_place=finished is not edited)
    _, figures["encode"] = _measured(encode)

    # A hosted provider's answer (every pixel changed, at the request's size) as the
    # server finishes it: fitted by RemoteProvider under a host that composites, then
    # composited by the store stage. Not part of the opencv job's total.
    hosted = _inpaint_edit(pristine.copy(), binary, blend)
    vendor = 255 - pristine
    hosted_request = InpaintRequest(image=hosted.image, mask=binary, model="m", seed=0)
    host_composites = "put_back" in inspect.signature(fit_to_request).parameters
    fit = functools.partial(fit_to_request, hosted_request, vendor)
    if host_composites:
        fit = functools.partial(fit, put_back=False)
    _, figures["hosted"] = _measured(lambda: keep_unedited(hosted, fit()))
    return figures


def _inpaint_edit(
    pixels: NDArray[np.uint8], binary: NDArray[np.uint8], blend: NDArray[np.uint8]
) -> PreparedEdit:
    height, width = pixels.shape[:2]
    return PreparedEdit(
        operation=Operation.INPAINT,
        route=RouteRequest(Operation.INPAINT, width, height),
        output_size=(width, height),
        output=OutputSpec("PNG", 90, inline=True),
        seed=0,
        image=pixels,
        sources=SourceFiles(None),
        spec=InpaintSpec(binary, blend, GenerationParams()),
    )


async def _steps_main(runs: int) -> None:
    workload = make_workload(1024)
    provider = OpenCVProvider()
    await provider.start({})
    try:
        samples = [await _step_run(workload, provider) for _ in range(runs)]
    finally:
        await provider.aclose()
    print(json.dumps(samples))


def _steps(tree: Path | None, runs: int) -> list[dict[str, dict[str, float]]]:
    output = subprocess.run(
        [sys.executable, "-m", "bench.pixel_cpu", "_steps", f"--runs={runs}"],
        cwd=ROOT,
        env={**os.environ, **tree_env(tree)},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    samples: list[dict[str, dict[str, float]]] = json.loads(output)
    return samples


@contextmanager
def _servers(trees: Mapping[str, Path | None]) -> Iterator[dict[str, tuple[int, int]]]:
    """name -> (port, pid) of one server per tree, each with its own data directory."""
    with ExitStack() as stack:
        found: dict[str, tuple[int, int]] = {}
        for name, tree in trees.items():
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pixel-cpu-")))
            pids: list[int] = []
            port = stack.enter_context(retouch_server(data_dir, pids=pids, env=tree_env(tree)))
            found[name] = (port, pids[0])
        yield found


async def _server_cpu(
    servers: Mapping[str, tuple[int, int]], workload: Workload, rounds: int, batch: int
) -> dict[str, list[float]]:
    """Server CPU ms per job, one figure per batch, batches alternating between servers."""
    per_job: dict[str, list[float]] = {name: [] for name in servers}
    channels = {name: client.channel(port) for name, (port, _) in servers.items()}
    try:
        stubs = {name: image_edit_pb2_grpc.ImageEditStub(ch) for name, ch in channels.items()}
        for stub in stubs.values():
            for _ in range(3):
                await client.inpaint(stub, workload.request())
        names = list(servers)
        for round_ in range(rounds):
            for name in names if round_ % 2 == 0 else names[::-1]:
                pid = servers[name][1]
                before = process_cpu_ms(pid)
                for _ in range(batch):
                    await client.inpaint(stubs[name], workload.request())
                per_job[name].append((process_cpu_ms(pid) - before) / batch)
    finally:
        await asyncio.gather(*(ch.close() for ch in channels.values()))
    return per_job


def _summary(values: list[float]) -> str:
    return f"median {statistics.median(values):7.2f}  mean {statistics.fmean(values):7.2f}"


def _report_steps(results: Mapping[str, list[dict[str, dict[str, float]]]]) -> None:
    print("\nPixel work per step, in this process: median over runs")
    print(f"{'step':10s} " + "  ".join(f"{n + ' cpu/wall ms, peak MB':>38s}" for n in results))
    for step in (*STEPS, "total", "hosted"):
        cells = []
        for samples in results.values():
            if step == "total":
                cpu = [sum(s[k]["cpu"] for k in STEPS) for s in samples]
                wall = [sum(s[k]["wall"] for k in STEPS) for s in samples]
                peak = [max(s[k]["peak_mb"] for k in STEPS) for s in samples]
            else:
                cpu = [s[step]["cpu"] for s in samples]
                wall = [s[step]["wall"] for s in samples]
                peak = [s[step]["peak_mb"] for s in samples]
            cells.append(
                f"{statistics.median(cpu):9.2f} / {statistics.median(wall):7.2f}, "
                f"{statistics.median(peak):6.2f} MB"
            )
        print(f"{step:10s} " + "  ".join(f"{c:>38s}" for c in cells))
    print("hosted: a hosted answer's fit_to_request + keep_unedited (not in the total)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pixel_cpu", description=__doc__)
    parser.add_argument("mode", nargs="?", choices=("all", "steps", "server", "_steps"))
    parser.add_argument("--baseline", type=Path, help="a checkout to compare against")
    parser.add_argument("--runs", type=int, default=15, help="step runs per tree and pass")
    parser.add_argument("--rounds", type=int, default=8, help="server batches per tree")
    parser.add_argument("--batch", type=int, default=5, help="jobs per server batch")
    args = parser.parse_args(argv)
    mode = args.mode or "all"
    if mode == "_steps":
        asyncio.run(_steps_main(args.runs))
        return 0
    trees: dict[str, Path | None] = {"this tree": None}
    if args.baseline is not None:
        trees = {"baseline": args.baseline.resolve(), **trees}
    if mode in ("all", "steps"):
        # Two passes, the trees in alternating order, so neither always runs first.
        results: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name in trees}
        for order in (list(trees), list(trees)[::-1]):
            for name in order:
                results[name] += _steps(trees[name], args.runs)
        _report_steps(results)
    if mode in ("all", "server"):
        workload = make_workload(1024)
        with _servers(trees) as servers:
            per_job = asyncio.run(_server_cpu(servers, workload, args.rounds, args.batch))
        print(f"\nServer CPU per job ({args.rounds} batches of {args.batch} jobs per tree), ms")
        for name, values in per_job.items():
            print(f"{name:10s} {_summary(values)}")
        if args.baseline is not None:
            base, new = (statistics.median(per_job[n]) for n in trees)
            print(f"change     {100 * (new - base) / base:+.1f} % (medians)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
