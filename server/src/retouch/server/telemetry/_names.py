"""The names retouch's telemetry uses: span names, attribute keys, metric instruments.

They are part of what operators build dashboards and alerts on, so they change only on
purpose; ``docs/operations.md`` lists them with their meaning.
"""

from __future__ import annotations

from typing import Final, Literal

# Attributes on spans and metric points. Ours carry the ``retouch.`` prefix; the gRPC
# ones follow OpenTelemetry's RPC semantic conventions.
TENANT: Final = "retouch.tenant"
SUBJECT: Final = "retouch.subject"
JOB_ID: Final = "retouch.job_id"
OPERATION: Final = "retouch.operation"
PROVIDER: Final = "retouch.provider"
MODEL: Final = "retouch.model"
PIXELS: Final = "retouch.pixels"
COST_CREDITS: Final = "retouch.cost_credits"
OUTCOME: Final = "retouch.outcome"
STATUS_CODE: Final = "retouch.status_code"
REASON: Final = "retouch.reason"
STAGE: Final = "retouch.stage"
ERROR_KIND: Final = "retouch.error_kind"
FORMAT: Final = "retouch.format"
BYTES: Final = "retouch.bytes"
RPC_METHOD: Final = "rpc.method"
RPC_GRPC_STATUS_CODE: Final = "rpc.grpc.status_code"
# The stable RPC semantic conventions: the fully qualified method ("retouch.v1.ImageEdit/
# Inpaint"), the status code's name, and the peer.
RPC_SYSTEM_NAME: Final = "rpc.system.name"
RPC_RESPONSE_STATUS_CODE: Final = "rpc.response.status_code"
NETWORK_PEER_ADDRESS: Final = "network.peer.address"
NETWORK_PEER_PORT: Final = "network.peer.port"
NETWORK_TYPE: Final = "network.type"
CLIENT_ADDRESS: Final = "client.address"
CLIENT_PORT: Final = "client.port"

# Metric instruments.
JOBS: Final = "retouch.jobs"
STAGE_DURATION: Final = "retouch.stage.duration"
REFUSALS: Final = "retouch.refusals"
PROVIDER_ERRORS: Final = "retouch.provider.errors"
STORED_BYTES: Final = "retouch.storage.bytes"
RPC_SERVER_CALL_DURATION: Final = "rpc.server.call.duration"

StageName = Literal[
    "validation",
    "decode",
    "policy.admit",
    "policy.tokens",
    "policy.reserve",
    "routing",
    "provider",
    "storage",
]
"""A step of an edit, timed by ``retouch.stage.duration`` and traced as ``retouch.<stage>``."""

TOTAL_STAGE: Final = "total"
"""The ``retouch.stage`` of an edit's whole duration: from the RPC's arrival to the job's end."""

INSTRUMENTATION_SCOPE: Final = "retouch.server"
