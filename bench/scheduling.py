"""A burst of large jobs against the scheduler: the server's memory during and after.

64 concurrent 2048² inpaint streams go to one server process (opencv, capacity = its
worker count); its resident memory is read from ``/proc`` (VmHWM for the peak, VmRSS
for the idle figures) before the burst, at its peak, and 10 s after the last job ended.
Every stream is checked for a ``queued`` Progress carrying its position.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from grpc import aio

from retouch.v1 import common_pb2, image_edit_pb2_grpc
from retouch.v1 import image_edit_pb2 as pb

from .processes import METADATA, retouch_server

STREAMS = 64
SIDE = 2048
SETTLE_S = 10.0
PEAK_TARGET_MIB = 600
AFTER_TARGET = 1.3


@dataclass(frozen=True, slots=True)
class BurstFigures:
    baseline_mib: float
    peak_mib: float
    after_mib: float
    streams_told_position: int
    seconds: float


def _kib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return float(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def _inputs() -> tuple[bytes, bytes]:
    ys, xs = np.mgrid[0:SIDE, 0:SIDE]
    image = np.dstack([(xs * 255 // SIDE), (ys * 255 // SIDE), ((xs + ys) % 256)]).astype(np.uint8)
    mask = np.zeros((SIDE, SIDE), np.uint8)
    mask[SIDE // 3 : SIDE // 2, SIDE // 3 : SIDE // 2] = 255
    return cv2.imencode(".png", image)[1].tobytes(), cv2.imencode(".png", mask)[1].tobytes()


async def _one(stub: image_edit_pb2_grpc.ImageEditAsyncStub, request: pb.InpaintRequest) -> bool:
    told = False
    async for event in stub.Inpaint(request, metadata=METADATA):
        if event.HasField("progress") and event.progress.stage == "queued":
            told = True
    return told


async def run_scheduling_bench() -> BurstFigures:
    image, mask = _inputs()
    request = pb.InpaintRequest(
        image=common_pb2.ImageInput(data=image),
        mask=common_pb2.ImageInput(data=mask),
        provider=common_pb2.ProviderChoice(provider="opencv"),
    )
    pids: list[int] = []
    with tempfile.TemporaryDirectory() as data, retouch_server(Path(data), pids=pids) as port:
        pid = pids[0]
        async with aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 64 << 20)]
        ) as channel:
            stub = image_edit_pb2_grpc.ImageEditStub(channel)
            await _one(stub, request)  # warm: imports, pools, the database
            await asyncio.sleep(SETTLE_S)
            baseline = _kib(pid, "VmRSS")
            started = time.perf_counter()
            told = await asyncio.gather(*(_one(stub, request) for _ in range(STREAMS)))
            seconds = time.perf_counter() - started
            peak = _kib(pid, "VmHWM")
            await asyncio.sleep(SETTLE_S)
            after = _kib(pid, "VmRSS")
    return BurstFigures(baseline / 1024, peak / 1024, after / 1024, sum(told), seconds)


def render_scheduling(figures: BurstFigures) -> str:
    """The burst section of RESULTS.md."""
    peak_ok = figures.peak_mib <= PEAK_TARGET_MIB
    after_ok = figures.after_mib <= AFTER_TARGET * figures.baseline_mib
    told_ok = figures.streams_told_position == STREAMS
    verdict = {True: "PASS", False: "MISS"}
    return "\n".join(
        [
            "## Scheduling: a burst of large jobs",
            "",
            f"{STREAMS} concurrent {SIDE}² PNG inpaint streams on opencv, one server process, "
            f"{figures.seconds:.1f} s in all.",
            "",
            "| figure | value | target | verdict |",
            "|---|---|---|---|",
            f"| RSS before the burst | {figures.baseline_mib:.0f} MiB | | |",
            f"| peak RSS (VmHWM) | {figures.peak_mib:.0f} MiB | <= {PEAK_TARGET_MIB} MiB "
            f"| {verdict[peak_ok]} |",
            f"| RSS {SETTLE_S:.0f} s after | {figures.after_mib:.0f} MiB | <= {AFTER_TARGET}x "
            f"before | {verdict[after_ok]} |",
            f"| streams told their queue position | {figures.streams_told_position}/{STREAMS} "
            f"| all | {verdict[told_ok]} |",
            "",
        ]
    )


if __name__ == "__main__":
    print(render_scheduling(asyncio.run(run_scheduling_bench())))
