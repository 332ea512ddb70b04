"""``python -m bench`` (``make bench``): run the speed and quality benches, write RESULTS.md."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from .database import render_database, run_database_bench
from .embedded_baseline import render_embedded_baseline, run_embedded_baseline_bench
from .fairness import render_fairness, run_fairness_bench
from .hosted import render_hosted, run_hosted_bench
from .limits import render_limits, run_limits_bench
from .machine import describe_machine
from .policy import render_policy, run_policy_bench
from .quality import run_quality_bench
from .replicas import render_replicas, run_replicas_bench
from .report import render, summary
from .resilience import render_resilience, run_resilience_bench
from .scheduling import render_scheduling, run_scheduling_bench
from .server_cpu import render_server_cpu, run_server_cpu_bench
from .speed import run_speed_bench
from .telemetry import render_telemetry, run_telemetry_bench

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def main() -> int:
    machine = describe_machine()
    speed = asyncio.run(run_speed_bench())
    print("bench: embedded figures beside issue 8's baseline", file=sys.stderr, flush=True)
    embedded_baseline = asyncio.run(run_embedded_baseline_bench())
    print("bench: policy", file=sys.stderr, flush=True)
    policy = asyncio.run(run_policy_bench())
    print("bench: database", file=sys.stderr, flush=True)
    database = asyncio.run(run_database_bench())
    print("bench: telemetry", file=sys.stderr, flush=True)
    telemetry = asyncio.run(run_telemetry_bench())
    print("bench: resilience", file=sys.stderr, flush=True)
    resilience = asyncio.run(run_resilience_bench())
    print("bench: hosted providers", file=sys.stderr, flush=True)
    hosted = asyncio.run(run_hosted_bench())
    print("bench: token buckets and uploads", file=sys.stderr, flush=True)
    limits = asyncio.run(run_limits_bench())
    print("bench: replicas", file=sys.stderr, flush=True)
    replicas = asyncio.run(run_replicas_bench())
    print("bench: scheduling", file=sys.stderr, flush=True)
    scheduling = asyncio.run(run_scheduling_bench())
    print("bench: fairness", file=sys.stderr, flush=True)
    fairness = asyncio.run(run_fairness_bench())
    print("bench: server CPU per job", file=sys.stderr, flush=True)
    server_cpu = asyncio.run(run_server_cpu_bench())
    print("bench: quality", file=sys.stderr, flush=True)
    quality = run_quality_bench()
    sections = "\n".join(
        [
            render_policy(policy),
            render_database(database),
            render_telemetry(telemetry),
            render_resilience(resilience),
            render_hosted(hosted),
            render_limits(limits),
            render_replicas(replicas),
            render_scheduling(scheduling),
            render_fairness(fairness),
            render_server_cpu(server_cpu),
        ]
    )
    baseline = render_embedded_baseline(embedded_baseline)
    RESULTS.write_text(render(machine, speed, sections, quality, speed_baseline=baseline))
    print(summary(speed))
    print(baseline)
    print(render_policy(policy))
    print(render_database(database))
    print(render_telemetry(telemetry))
    print(render_replicas(replicas))
    print(render_resilience(resilience))
    print(render_hosted(hosted))
    print(render_limits(limits))
    print(render_scheduling(scheduling))
    print(render_fairness(fairness))
    print(render_server_cpu(server_cpu))
    print(f"figures written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
