"""Where one job's pixel work spends CPU and memory, now and before the pixel-path changes.

``python -m bench.pixel_steps`` runs the server's pixel work for the 1024x1024 PNG inpaint
of :mod:`bench.workload` (opencv/telea) in a process of its own, one function per step:
decode, mask preparation, the provider (``OpenCVProvider.run``), compositing
(``keep_unedited``) and encoding, and on the side a hosted provider's answer fitted
(``fit_to_request``, as ``RemoteProvider`` does under the server) and composited. Each
step's CPU and wall time and the peak of memory it allocated (tracemalloc) are printed
beside the same steps of :data:`~bench.baseline.BEFORE_PIXEL_PATH`, extracted with
:func:`bench.baseline.checkout` and run with its ``src`` directories first on
``PYTHONPATH``; the runs alternate between the two. The server's own CPU per job is
:mod:`bench.server_cpu`'s.
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
import time
import tracemalloc
from collections.abc import Callable, Mapping
from contextlib import aclosing
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

from . import interleave
from .baseline import BEFORE_PIXEL_PATH, checkout, working_tree
from .processes import ROOT, Source
from .workload import Workload, make_workload

T = TypeVar("T")
Samples = list[dict[str, dict[str, float]]]
"""Per run, per step: ``cpu`` and ``wall`` ms and ``peak_mb``."""

STEPS = ("decode", "mask", "provider", "composite", "encode")
PASSES = 4
SIDE = 1024
RUNS_PER_PASS = 5
_CHILD = "--child"


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


async def _child(runs: int, side: int) -> None:
    """In the measured process: say where the code came from, then the samples."""
    imported = {name: sys.modules[name].__file__ for name in ("retouch.server", "retouch.sdk")}
    workload = make_workload(side)
    provider = OpenCVProvider()
    await provider.start({})
    try:
        samples = [await _step_run(workload, provider) for _ in range(runs)]
    finally:
        await provider.aclose()
    print(json.dumps({"imported": imported, "samples": samples}))


def samples_of(source: Source, runs: int, side: int = SIDE) -> Samples:
    """``runs`` step runs on a ``side`` x ``side`` workload, in a process of its own
    that runs ``source``'s code (refused unless it imported that code)."""
    env = dict(os.environ)
    if source.src_dirs:
        inherited = [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []
        env["PYTHONPATH"] = os.pathsep.join([*map(str, source.src_dirs), *inherited])
    output = subprocess.run(
        [sys.executable, "-m", "bench.pixel_steps", _CHILD, f"--runs={runs}", f"--side={side}"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    answer = json.loads(output)
    strays = {
        name: path
        for name, path in answer["imported"].items()
        if not Path(path).is_relative_to(source.root)
    }
    if strays:
        raise RuntimeError(f"the steps of {source.label} ran code from elsewhere: {strays}")
    samples: Samples = answer["samples"]
    return samples


def render(results: Mapping[str, Samples]) -> str:
    """The per-step table: medians over every run of each source."""
    header = "| step | " + " | ".join(f"`{label}` CPU / wall (ms), peak" for label in results)
    lines = [header + " |", "|---|" + "---:|" * len(results)]
    for step in (*STEPS, "total", "hosted"):
        cells = []
        for samples in results.values():
            keys = STEPS if step == "total" else (step,)
            cpu = statistics.median(sum(s[k]["cpu"] for k in keys) for s in samples)
            wall = statistics.median(sum(s[k]["wall"] for k in keys) for s in samples)
            peak = statistics.median(max(s[k]["peak_mb"] for k in keys) for s in samples)
            cells.append(f"{cpu:.2f} / {wall:.2f}, {peak:.2f} MB")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    runs = len(next(iter(results.values())))
    lines += [
        "",
        f"Medians of {runs} runs each, in {PASSES} alternating passes. Peak is the most "
        "memory allocated at once during the step (tracemalloc, NumPy buffers included; "
        "for total, the largest step's). hosted, not in the total: a hosted answer at the "
        "request's size, fitted and composited as the server finishes it.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pixel_steps", description=__doc__)
    parser.add_argument(_CHILD, action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=RUNS_PER_PASS, help="step runs per pass")
    parser.add_argument("--side", type=int, default=SIDE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        asyncio.run(_child(args.runs, args.side))
        return 0
    with checkout(BEFORE_PIXEL_PATH, "before the pixel-path changes") as before:
        sources = (before, working_tree())
        results: dict[str, Samples] = {source.label: [] for source in sources}
        for source in interleave.turns(PASSES // 2, *sources):
            print(f"bench: pixel steps: {source.label}", file=sys.stderr, flush=True)
            results[source.label] += samples_of(source, args.runs)
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
