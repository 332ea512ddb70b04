"""``bench/RESULTS.md``: the figures, their targets, and what they were measured on."""

from __future__ import annotations

from .machine import Machine
from .speed import SpeedResults
from .stats import Figure, Summary

REFERENCE_P50_MS = 554.0
REFERENCE_JOBS_S = 2.8
REFERENCE = (
    "a popular open-source inpainting server doing the same OpenCV inpaint over HTTP "
    f"measured {REFERENCE_P50_MS:g} ms p50 and {REFERENCE_JOBS_S:g} jobs/s here"
)


def render(
    machine: Machine, speed: SpeedResults, sections: str, quality: str, *, speed_baseline: str = ""
) -> str:
    """The whole RESULTS.md; ``speed_baseline`` ends the speed section."""
    lines = [
        "# retouch benchmarks",
        "",
        "Written by `make bench` (`python -m bench`); figures from one run, do not edit.",
        "",
        *machine.lines(),
        "",
        "## Speed",
        "",
        *_speed(speed),
        "",
        *([speed_baseline.rstrip(), ""] if speed_baseline else []),
        sections.rstrip(),
        "",
        "## Quality",
        "",
        quality.rstrip(),
        "",
    ]
    return "\n".join(lines)


def summary(speed: SpeedResults) -> str:
    """A few lines for the terminal."""
    return "\n".join(
        f"{figure.verdict}  {figure.name}: {figure.measured} (target {figure.target})"
        for figure in speed.figures()
    )


def _speed(speed: SpeedResults) -> list[str]:
    config, load = speed.config, speed.concurrency
    return [
        f"Workload: {speed.workload}; Inpaint with `output.inline = true`, provider and "
        f"model named in the request ({speed.route}, checked against each job's Accepted "
        "event), a fresh `request_id` per call. The server is `python -m "
        "retouch.server` in its own process with the default config (SQLite + filesystem "
        "store in a temporary directory) except that the development tenant's plan and "
        "tenant bucket allow the rate the bench drives (`bench/processes.py`, "
        "`BENCH_CONFIG`; buckets are still checked on every call); the client is the "
        f"bench process, grpc.aio over loopback. {config.warmup} warm-up calls first.",
        "",
        "| figure | measured | target | result | detail |",
        "|---|---:|---:|:---:|---|",
        *(_figure_row(figure) for figure in speed.figures()),
        "",
        "Latencies in ms:",
        "",
        "| measurement | n | p50 | p90 | mean | min | max |",
        "|---|---:|---:|---:|---:|---:|---:|",
        _row("service, end to end (call start to Completed with inline bytes)", speed.service),
        _row("service, call start to Accepted", speed.first_event),
        _row("service, provider time reported in Completed", speed.provider_ms),
        _row("in-process, decode + inpaint + composite + encode", speed.in_process),
        _row("in-process: decode (image, mask, prepare_mask)", speed.stages["decode"]),
        _row("in-process: inpaint (OpenCVProvider.run, telea)", speed.stages["inpaint"]),
        _row("in-process: composite", speed.stages["composite"]),
        _row("in-process: encode (PNG)", speed.stages["encode"]),
        _row(f"{load.clients} concurrent clients, per job", load.latency),
        _row(f"64x64 job, end to end ({speed.tiny_workload})", speed.tiny),
        _row("bare grpc.aio unary-stream echo", speed.echo),
        "",
        "How each was measured:",
        "",
        f"- Sequential: {config.samples} service calls on one channel, each next to one "
        "in-process run of the same work (order alternating), so both see the same machine "
        "load; the server process is idle during the in-process runs. In-process runs "
        "`decode_image`, `decode_mask`, `prepare_mask`, `OpenCVProvider.run` (its own "
        "worker pool, as in the server), `retouch.sdk.composite` and `encode_image(pixels, "
        '"PNG", 90)`.',
        f"- Concurrency: {load.clients} clients, each on its own channel, each running "
        f"{load.jobs_per_client} jobs one after another; throughput is all jobs over the "
        f"wall time from the first call to the last Completed. Every stream received at "
        f"least {load.min_progress_events} Progress events; the longest gap between "
        f"consecutive events on any stream was {load.max_gap_ms:.1f} ms "
        f"({load.max_gap_between}).",
        f"- Fixed cost: {config.tiny_samples} 64x64 jobs interleaved with as many calls to "
        "`bench/echo_server.py`, a bare grpc.aio server in its own process (generic handler, "
        f"bytes in and out, no interceptors or storage) streaming {speed.echo_shape}.",
        f"- Default route, for the record: one 1024x1024 job naming no provider ran on "
        f"{speed.default_route.route} and took {speed.default_route.total_ms:.0f} ms end to "
        f"end ({speed.default_route.progress_events} Progress events); the figures above "
        f"name {speed.route} so that they measure the same work as the in-process baseline.",
        "",
        f"Reference, from the issue: {REFERENCE}. Here retouch's p50 is "
        f"{REFERENCE_P50_MS / speed.service.p50:.1f}x lower and its throughput "
        f"{load.jobs_per_s / REFERENCE_JOBS_S:.1f}x higher.",
    ]


def _figure_row(figure: Figure) -> str:
    return (
        f"| {figure.name} | {figure.measured} | {figure.target} | **{figure.verdict}** | "
        f"{figure.detail} |"
    )


def _row(name: str, summary: Summary) -> str:
    values = (summary.p50, summary.p90, summary.mean, summary.min, summary.max)
    return f"| {name} | {summary.n} | " + " | ".join(f"{v:.1f}" for v in values) + " |"
