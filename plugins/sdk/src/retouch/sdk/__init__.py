"""retouch.sdk: what a provider author needs to plug pixel work into retouch.

A provider is a class registered under the ``retouch.providers`` entry point group. It
publishes a :class:`Manifest`, and its ``run`` method turns an :class:`EditRequest`
and the job's :class:`JobContext` into :class:`Progress` events and one
:class:`Result`, raising a :class:`ProviderError` when it cannot. Hosted providers
build on :mod:`retouch.sdk.http`. Nothing here depends on protobuf or gRPC.
"""

from ._compositing import composite, mask_bounds
from ._config import ConfigReader, ProviderNotConfigured
from ._context import SYSTEM_CLOCK, Clock, EncodedImage, JobContext, SystemClock
from ._errors import (
    ProviderBadResponse,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)
from ._events import Event, Progress, Result, Usage
from ._images import decode_image, encode_png, expected_size, fit_to_request
from ._manifest import SDK_API_VERSION, CostModel, EnhanceKind, Manifest, Operation
from ._progress import JobCancelled, ProgressReporter, WorkerPool, run_with_progress
from ._provider import ENTRY_POINT_GROUP, Health, HealthReport, Provider
from ._requests import (
    EditRequest,
    EnhanceRequest,
    GenerationParams,
    InpaintRequest,
    Mask,
    OutpaintRequest,
    Padding,
    RGBImage,
)
from ._secrets import Redactor, Secret
from ._tracing import trace_headers
from ._uploads import Upload, upload_image

__all__ = [
    "ENTRY_POINT_GROUP",
    "SDK_API_VERSION",
    "SYSTEM_CLOCK",
    "Clock",
    "ConfigReader",
    "CostModel",
    "EditRequest",
    "EncodedImage",
    "EnhanceKind",
    "EnhanceRequest",
    "Event",
    "GenerationParams",
    "Health",
    "HealthReport",
    "InpaintRequest",
    "JobCancelled",
    "JobContext",
    "Manifest",
    "Mask",
    "Operation",
    "OutpaintRequest",
    "Padding",
    "Progress",
    "ProgressReporter",
    "Provider",
    "ProviderBadResponse",
    "ProviderError",
    "ProviderNotConfigured",
    "ProviderRateLimited",
    "ProviderRejected",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RGBImage",
    "Redactor",
    "Result",
    "Secret",
    "SystemClock",
    "Upload",
    "Usage",
    "WorkerPool",
    "composite",
    "decode_image",
    "encode_png",
    "expected_size",
    "fit_to_request",
    "mask_bounds",
    "run_with_progress",
    "trace_headers",
    "upload_image",
]
