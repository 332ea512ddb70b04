"""The fairness bench floods from a process of its own and waits for it at each turn."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from bench import client
from bench.fairness import run_fairness_bench
from bench.flood import flood_process
from bench.processes import METADATA, retouch_server
from retouch.v1 import image_edit_pb2 as pb
from retouch.v1 import image_edit_pb2_grpc

STREAMS = 3
SIDE = 64


async def _jobs(port: int, state: pb.JobState.ValueType) -> int:
    """How many of the development tenant's jobs the server holds in ``state``."""
    jobs, token = 0, ""
    async with client.channel(port) as channel:
        stub = image_edit_pb2_grpc.ImageEditStub(channel)
        while True:
            request = pb.ListJobsRequest(page_size=100, page_token=token, state=state)
            listed = await stub.ListJobs(request, metadata=METADATA)
            jobs += len(listed.jobs)
            token = listed.next_page_token
            if not token:
                return jobs


async def test_the_flood_holds_a_job_of_every_stream_and_ends_them_all(tmp_path: Path) -> None:
    with retouch_server(tmp_path) as port:
        async with flood_process(port, streams=STREAMS, side=SIDE, warmup=1) as flood:
            assert flood.process.pid != os.getpid()
            assert await _jobs(port, pb.JOB_STATE_SUCCEEDED) == 1
            for _ in range(2):
                before = len(flood.latency_ms)
                async with flood.flooding():
                    # Every stream's first job is in the server before the block runs.
                    assert await _jobs(port, pb.JOB_STATE_UNSPECIFIED) >= 1 + before + STREAMS
                # And every job the flood started has ended by the time the block has.
                assert await _jobs(port, pb.JOB_STATE_QUEUED) == 0
                assert await _jobs(port, pb.JOB_STATE_RUNNING) == 0
                assert len(flood.latency_ms) >= before + STREAMS
                assert await _jobs(port, pb.JOB_STATE_SUCCEEDED) == 1 + len(flood.latency_ms)
        assert flood.process.returncode == 0
    assert all(ms > 0 for ms in flood.latency_ms)


async def test_a_flood_that_cannot_reach_its_server_fails_instead_of_hanging() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(RuntimeError, match="exited with 1 before saying 'ready'"):
        async with flood_process(port, streams=1, side=SIDE, warmup=1):
            pass


async def test_the_bench_counts_each_phase_but_the_first_flooded_job() -> None:
    figures = await run_fairness_bench(
        side=SIDE, flood=STREAMS, rounds=2, jobs_per_phase=2, warmup=1
    )
    assert (figures.unloaded.n, figures.flooded.n) == (4, 4)
    assert figures.flood.n >= 2 * STREAMS
    assert figures.ratio == figures.flooded.p50 / figures.unloaded.p50
