"""Helpers for tests: sample photos, masks, encodings and call metadata."""

from __future__ import annotations

import cv2
import numpy as np
from grpc import aio
from numpy.typing import NDArray
from skimage import data as samples

from retouch.server.config import DEV_API_KEY
from retouch.v1 import image_edit_pb2 as pb

# The photos scikit-image bundles with its wheel; nothing is downloaded.


def photo(size: tuple[int, int] = (256, 256)) -> NDArray[np.uint8]:
    """The astronaut photo, RGB, resized to (width, height)."""
    astronaut: NDArray[np.uint8] = samples.astronaut()  # type: ignore[no-untyped-call]
    resized = cv2.resize(astronaut, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(resized, dtype=np.uint8)


def png(pixels: NDArray[np.uint8]) -> bytes:
    """RGB or gray pixels as PNG bytes."""
    bgr = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR) if pixels.ndim == 3 else pixels
    ok, encoded = cv2.imencode(".png", bgr)
    assert ok
    return encoded.tobytes()


def decode_png(data: bytes) -> NDArray[np.uint8]:
    """PNG bytes as RGB pixels."""
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert pixels is not None
    return np.asarray(cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB), dtype=np.uint8)


def square_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> NDArray[np.uint8]:
    """A black mask of (width, height) with the box (x0, y0, x1, y1) white."""
    mask = np.zeros((size[1], size[0]), np.uint8)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 255
    return mask


def metadata(key: str = DEV_API_KEY, subject: str | None = None) -> tuple[tuple[str, str], ...]:
    """Call metadata for a key and optional subject."""
    pairs = [("authorization", f"Bearer {key}")]
    if subject:
        pairs.append(("x-retouch-subject", subject))
    return tuple(pairs)


def rpc_details(error: object) -> list[object]:
    """The ``google.rpc`` detail messages of a failed call (an ``aio.AioRpcError``)."""
    from google.rpc import error_details_pb2, status_pb2

    trailing = error.trailing_metadata() or ()  # type: ignore[attr-defined]
    raw = dict(trailing).get("grpc-status-details-bin")
    if raw is None:
        return []
    status = status_pb2.Status.FromString(raw)
    kinds = [
        error_details_pb2.BadRequest,
        error_details_pb2.ErrorInfo,
        error_details_pb2.QuotaFailure,
        error_details_pb2.RetryInfo,
    ]
    found: list[object] = []
    for detail in status.details:
        for kind in kinds:
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found.append(message)
    return found


def bad_fields(error: object) -> list[str]:
    """Fields named by the BadRequest detail of a failed call."""
    from google.rpc import error_details_pb2

    return [
        violation.field
        for detail in rpc_details(error)
        if isinstance(detail, error_details_pb2.BadRequest)
        for violation in detail.field_violations
    ]


async def read_all(call: object) -> list[pb.JobEvent]:
    """Every remaining event of a streaming call, read with ``read()`` so that it also
    works after earlier ``read()`` calls (gRPC forbids mixing that with iteration)."""
    events: list[pb.JobEvent] = []
    while True:
        event = await call.read()  # type: ignore[attr-defined]
        if event is aio.EOF:
            return events
        assert isinstance(event, pb.JobEvent)
        events.append(event)


async def read_one(call: object) -> pb.JobEvent:
    """The next event of a streaming call."""
    event = await call.read()  # type: ignore[attr-defined]
    assert isinstance(event, pb.JobEvent)
    return event
