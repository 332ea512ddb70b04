"""retouch.sdk: what a provider author needs to plug pixel work into retouch.

A provider is a class registered under the ``retouch.providers`` entry point group. It
publishes a :class:`Manifest`, and its ``run`` method turns an :class:`EditRequest`
into :class:`Progress` events and one :class:`Result`, raising a
:class:`ProviderError` when it cannot. Nothing here depends on protobuf or gRPC.
"""

from ._compositing import composite, mask_bounds
from ._errors import (
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)
from ._events import Event, Progress, Result
from ._manifest import SDK_API_VERSION, CostModel, Manifest, Operation
from ._progress import JobCancelled, ProgressReporter, WorkerPool, run_with_progress
from ._provider import ENTRY_POINT_GROUP, Health, HealthReport, Provider
from ._requests import (
    EditRequest,
    EnhanceKind,
    EnhanceRequest,
    GenerationParams,
    InpaintRequest,
    Mask,
    OutpaintRequest,
    Padding,
    RGBImage,
)
from ._tracing import trace_headers

__all__ = [
    "ENTRY_POINT_GROUP",
    "SDK_API_VERSION",
    "CostModel",
    "EditRequest",
    "EnhanceKind",
    "EnhanceRequest",
    "Event",
    "GenerationParams",
    "Health",
    "HealthReport",
    "InpaintRequest",
    "JobCancelled",
    "Manifest",
    "Mask",
    "Operation",
    "OutpaintRequest",
    "Padding",
    "Progress",
    "ProgressReporter",
    "Provider",
    "ProviderError",
    "ProviderRateLimited",
    "ProviderRejected",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RGBImage",
    "Result",
    "WorkerPool",
    "composite",
    "mask_bounds",
    "run_with_progress",
    "trace_headers",
]
