"""A typed Python client of the retouch image-editing service, and the ``retouch`` CLI.

:class:`AsyncClient` (``grpc.aio``) and :class:`Client` (blocking) send the API key and
subject with every call, apply default deadlines, and retry only what is safe to
retry (see :class:`RetryPolicy`)::

    from retouch.client import AsyncClient

    async with AsyncClient("127.0.0.1:50051", api_key=key, subject="user:42") as client:
        job = client.inpaint("photo.png", mask="mask.png")
        async for event in job:          # Accepted, Progress…, Completed
            print(event)
        result = await job               # or just: result = await client.inpaint(...)
        await result.save("out.png")

Failed calls raise :class:`RetouchError` subclasses carrying the ``google.rpc`` details:

    RetouchError                 code, message, reason, metadata, field_violations,
    │                            quota_violations, retry_after, details
    ├── InvalidArgument          INVALID_ARGUMENT
    ├── Unauthenticated          UNAUTHENTICATED
    ├── PermissionDenied         PERMISSION_DENIED
    ├── NotFound                 NOT_FOUND
    ├── ResourceExhausted        RESOURCE_EXHAUSTED
    ├── Unavailable              UNAVAILABLE (also: server unreachable)
    ├── Cancelled                CANCELLED
    ├── DeadlineExceeded         DEADLINE_EXCEEDED
    └── ServerError              INTERNAL, UNKNOWN and any other code
"""

from __future__ import annotations

from ._client import DEFAULT_TARGET, AsyncClient
from ._errors import (
    Cancelled,
    DeadlineExceeded,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    QuotaViolation,
    ResourceExhausted,
    RetouchError,
    ServerError,
    Unauthenticated,
    Unavailable,
    from_rpc_error,
)
from ._events import (
    Accepted,
    Completed,
    Event,
    ExcludedProvider,
    Format,
    ImageInfo,
    Preference,
    Progress,
    Routing,
)
from ._inputs import ImageRef, ImageSource
from ._jobs import EditJob, Job, OnProgress
from ._models import (
    Bucket,
    CostModel,
    JobInfo,
    JobState,
    Operation,
    ProviderHealth,
    ProviderInfo,
    Quote,
    Refusal,
    Upload,
    Usage,
)
from ._results import Result, ResultInfo
from ._retry import RetryPolicy, Sleep
from ._sync import Client, SyncEditJob, SyncJob, SyncResult
from ._tls import TLS

__all__ = [
    "DEFAULT_TARGET",
    "TLS",
    "Accepted",
    "AsyncClient",
    "Bucket",
    "Cancelled",
    "Client",
    "Completed",
    "CostModel",
    "DeadlineExceeded",
    "EditJob",
    "Event",
    "ExcludedProvider",
    "FieldViolation",
    "Format",
    "ImageInfo",
    "ImageRef",
    "ImageSource",
    "InvalidArgument",
    "Job",
    "JobInfo",
    "JobState",
    "NotFound",
    "OnProgress",
    "Operation",
    "PermissionDenied",
    "Preference",
    "Progress",
    "ProviderHealth",
    "ProviderInfo",
    "QuotaViolation",
    "Quote",
    "Refusal",
    "ResourceExhausted",
    "Result",
    "ResultInfo",
    "RetouchError",
    "RetryPolicy",
    "Routing",
    "ServerError",
    "Sleep",
    "SyncEditJob",
    "SyncJob",
    "SyncResult",
    "Unauthenticated",
    "Unavailable",
    "Upload",
    "Usage",
    "from_rpc_error",
]
