"""The metric instruments retouch records, created once per :class:`Telemetry`."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.metrics import Counter, Histogram, Meter, NoOpMeter

from ._names import (
    INSTRUMENTATION_SCOPE,
    JOBS,
    PROVIDER_ERRORS,
    REFUSALS,
    RPC_SERVER_CALL_DURATION,
    STAGE_DURATION,
)
from ._names import STORED_BYTES as STORED_BYTES_NAME

DURATION_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
"""Histogram boundaries in seconds, from a cached decode (~1 ms) to a slow remote model."""


@dataclass(frozen=True, slots=True)
class Instruments:
    """Counters and histograms; each names its attributes in its description."""

    jobs: Counter
    stage_duration: Histogram
    refusals: Counter
    provider_errors: Counter
    stored_bytes: Counter
    call_duration: Histogram

    @classmethod
    def create(cls, meter: Meter) -> Instruments:
        return cls(
            jobs=meter.create_counter(
                JOBS,
                unit="{job}",
                description="Jobs that reached a terminal state, by retouch.operation, "
                "retouch.provider, retouch.outcome and retouch.status_code",
            ),
            stage_duration=meter.create_histogram(
                STAGE_DURATION,
                unit="s",
                description="Time an edit spent in each retouch.stage (validation, "
                "policy.admit, policy.tokens, policy.reserve, routing, provider, storage, total)",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
            ),
            refusals=meter.create_counter(
                REFUSALS,
                unit="{call}",
                description="Calls refused before any response, by rpc.method, "
                "retouch.status_code and retouch.reason",
            ),
            provider_errors=meter.create_counter(
                PROVIDER_ERRORS,
                unit="{error}",
                description="Failed provider calls, by retouch.provider and retouch.error_kind",
            ),
            stored_bytes=meter.create_counter(
                STORED_BYTES_NAME,
                unit="By",
                description="Bytes of result images written to the object store, by retouch.format",
            ),
            call_duration=meter.create_histogram(
                RPC_SERVER_CALL_DURATION,
                unit="s",
                description="Duration of each RPC the server handled, by rpc.system.name, "
                "rpc.method and rpc.response.status_code (OpenTelemetry RPC conventions)",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
            ),
        )


NOOP_INSTRUMENTS = Instruments.create(NoOpMeter(INSTRUMENTATION_SCOPE))
"""Instruments that record nothing, for a telemetry whose metrics are off."""
