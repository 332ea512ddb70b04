"""A flooding tenant in a process of its own: ``python -m bench.flood --port N``.

The fairness bench (:mod:`bench.fairness`) measures how long one tenant's single jobs
take while another keeps many in flight. Were the flood's streams on the bench's own
event loop, each single job would also wait behind the loop serializing the flood's
requests and receiving its results, a delay no caller on another machine sees. So the
flood runs here, on its own loop and its own channel, as the development tenant
(:data:`bench.processes.METADATA`).

The child speaks one JSON object a line on stdout and takes one word a line on stdin:

- after ``--warmup`` jobs one at a time: ``{"state": "ready"}``;
- ``start``: ``--streams`` streams each run a job, then the next as soon as it ends;
  once every stream's first job has been accepted (the server holds them all, queued
  or running): ``{"state": "flooding"}``;
- ``stop``: each stream lets its job in flight run to its end, so no cancellation
  muddles what comes next, then ``{"state": "stopped", "latency_ms": [...]}``, the
  end-to-end latency of every job this flood ran;
- end of input: the child exits.

:func:`flood_process` starts it and steers it from the bench's side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from retouch.v1 import image_edit_pb2_grpc

from . import client
from .processes import METADATA, ROOT
from .workload import Workload, make_workload

_STOP_TIMEOUT_S = 10.0
_LINE_LIMIT = 1 << 22
"""Room for one stop's latencies: tens of thousands of jobs."""
_START, _STOP = "start", "stop"
_READY, _FLOODING, _STOPPED = "ready", "flooding", "stopped"


@dataclass(slots=True)
class FloodProcess:
    """A running ``python -m bench.flood``, and the latencies of the jobs it has run."""

    process: asyncio.subprocess.Process
    latency_ms: list[float] = field(default_factory=list)

    @asynccontextmanager
    async def flooding(self) -> AsyncIterator[None]:
        """The flood, from the moment the server holds a job of each stream until the
        block ends; then every stream's last job runs to its end."""
        await self._send(_START)
        await self._expect(_FLOODING)
        try:
            yield
        finally:
            await self._send(_STOP)
            stopped = await self._expect(_STOPPED)
            self.latency_ms += [float(ms) for ms in stopped["latency_ms"]]

    async def _send(self, command: str) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(f"{command}\n".encode())
        await stdin.drain()

    async def _expect(self, state: str) -> dict[str, Any]:
        stdout = self.process.stdout
        assert stdout is not None
        line = await stdout.readline()
        if not line:
            code = await self.process.wait()
            raise RuntimeError(
                f"python -m bench.flood exited with {code} before saying {state!r}; "
                "its stderr says why"
            )
        message: dict[str, Any] = json.loads(line)
        if message.get("state") != state:
            raise RuntimeError(f"python -m bench.flood said {message!r}, not {state!r}")
        return message


@asynccontextmanager
async def flood_process(
    port: int, *, streams: int, side: int, warmup: int = 0
) -> AsyncIterator[FloodProcess]:
    """Start ``python -m bench.flood`` against the server on ``port`` and wait until it
    has run its ``warmup`` jobs; it exits when the block ends."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.flood",
        f"--port={port}",
        f"--streams={streams}",
        f"--side={side}",
        f"--warmup={warmup}",
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=_LINE_LIMIT,
    )
    try:
        flood = FloodProcess(process)
        await flood._expect(_READY)
        yield flood
    finally:
        await _close(process)
    if process.returncode:
        raise RuntimeError(f"python -m bench.flood exited with {process.returncode}")


async def _close(process: asyncio.subprocess.Process) -> None:
    if process.stdin is not None and not process.stdin.is_closing():
        process.stdin.close()
    try:
        async with asyncio.timeout(_STOP_TIMEOUT_S):
            await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()


# -- the child's side ------------------------------------------------------------------


async def _serve(port: int, streams: int, side: int, warmup: int) -> None:
    workload = make_workload(side)
    commands = await _stdin()
    async with client.channel(port) as channel:
        stub = image_edit_pb2_grpc.ImageEditStub(channel)
        for _ in range(warmup):
            await client.inpaint(stub, workload.request(), METADATA)
        _tell(_READY)
        while command := (await commands.readline()).decode().strip():
            if command != _START:
                raise RuntimeError(f"expected {_START!r} or the end of input, got {command!r}")
            latency_ms = await _flood(stub, workload, streams, commands)
            _tell(_STOPPED, latency_ms=latency_ms)


async def _flood(
    stub: image_edit_pb2_grpc.ImageEditAsyncStub,
    workload: Workload,
    streams: int,
    commands: asyncio.StreamReader,
) -> list[float]:
    """``streams`` streams of jobs until ``stop``; a failed job fails the whole flood."""
    latency_ms: list[float] = []
    stop = asyncio.Event()
    all_accepted = asyncio.Event()
    unaccepted = streams

    def accepted() -> None:
        nonlocal unaccepted
        unaccepted -= 1
        if not unaccepted:
            all_accepted.set()

    async def stream() -> None:
        on_accepted: Callable[[], None] | None = accepted
        while not stop.is_set():
            trace = await client.inpaint(
                stub, workload.request(), METADATA, on_accepted=on_accepted
            )
            latency_ms.append(trace.total_ms)
            on_accepted = None

    async def steer() -> None:
        await all_accepted.wait()
        _tell(_FLOODING)
        command = (await commands.readline()).decode().strip()
        if command not in (_STOP, ""):
            raise RuntimeError(f"expected {_STOP!r} during the flood, got {command!r}")
        stop.set()

    async with asyncio.TaskGroup() as group:
        group.create_task(steer())
        for _ in range(streams):
            group.create_task(stream())
    return latency_ms


async def _stdin() -> asyncio.StreamReader:
    # Read on the loop, not in a thread: a thread blocked on stdin would keep a failed
    # child from exiting, and its parent waiting for a line that never comes.
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def _tell(state: str, **fields: object) -> None:
    print(json.dumps({"state": state, **fields}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="the retouch server's")
    parser.add_argument("--streams", type=int, default=32, help="jobs kept in flight")
    parser.add_argument("--side", type=int, default=512, help="image side, pixels")
    parser.add_argument("--warmup", type=int, default=0, help="jobs run before ready")
    args = parser.parse_args(argv)
    if args.streams < 1 or args.side < 1 or args.warmup < 0:
        parser.error("--streams and --side must be >= 1 and --warmup >= 0")
    asyncio.run(_serve(args.port, args.streams, args.side, args.warmup))
    return 0


if __name__ == "__main__":
    sys.exit(main())
