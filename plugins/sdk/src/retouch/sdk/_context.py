"""What a provider knows about the job it runs, beyond the edit itself."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


class Clock(Protocol):
    """Wall time (``now``, for HTTP dates) and a monotonic time (``monotonic``, for
    deadlines and intervals), both in seconds. The server's clock satisfies it, and
    tests pass a manual one, so nothing in the SDK reads the real time directly."""

    def now(self) -> float: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK: Clock = SystemClock()


@dataclass(frozen=True, slots=True)
class EncodedImage:
    """An image as the caller sent it: encoded bytes (PNG, JPEG or WEBP) and their
    MIME type, so a remote provider can forward them without re-encoding."""

    data: bytes = field(repr=False)
    content_type: str

    def __post_init__(self) -> None:
        if not self.content_type.startswith("image/"):
            raise ValueError(f"content type {self.content_type!r} is not an image type")

    def __repr__(self) -> str:
        return f"EncodedImage({len(self.data)} bytes, {self.content_type!r})"


@dataclass(frozen=True, slots=True)
class JobContext:
    """The job a request belongs to, handed to :meth:`Provider.run` with it.

    - ``job_id``: stable for the job (and across retries of it); send it as the
      upstream idempotency key where the API has one.
    - ``deadline``: when the job must be done, on ``clock.monotonic()``'s scale, or
      ``None`` when the caller set none; read it through :meth:`time_left`.
    - ``trace_headers``: W3C trace context (``traceparent``, ``tracestate``,
      ``baggage``) to send upstream so the remote side joins the job's trace.
    - ``image`` / ``mask``: the original encoded inputs. ``image`` is what the caller
      sent (it may carry an alpha channel). ``mask`` is set only when the caller sent a
      separate mask that the server used unchanged (no invert or grow); otherwise
      encode ``request.mask`` (see :func:`~retouch.sdk.encode_png`).
    - ``image_url`` / ``mask_url``: short-lived URLs of those inputs in the object
      store, for APIs that fetch inputs themselves; ``None`` when the store cannot
      presign (the embedded filesystem store) or the input was sent inline.
    - ``host_composites``: the host puts every pixel outside the edit back itself
      (retouch's server does, with the caller's feathered mask), so a provider need
      not: :class:`~retouch.sdk.http.RemoteProvider` then only resizes the vendor's
      answer. ``False`` by default, and so in the conformance kit, which holds a
      provider to the whole contract on its own.
    """

    job_id: str
    deadline: float | None = None
    clock: Clock = field(default=SYSTEM_CLOCK, repr=False, compare=False)
    trace_headers: Mapping[str, str] = field(default_factory=dict)
    image: EncodedImage | None = None
    mask: EncodedImage | None = None
    image_url: str | None = field(default=None, repr=False)
    mask_url: str | None = field(default=None, repr=False)
    host_composites: bool = False

    def __post_init__(self) -> None:
        if not self.job_id:
            raise ValueError("a job context needs a job id")

    def time_left(self) -> float | None:
        """Seconds until the deadline (never negative), or ``None`` without one."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - self.clock.monotonic())

    def bound(self, seconds: float) -> float:
        """``seconds``, shortened to the time left before the deadline."""
        left = self.time_left()
        return seconds if left is None else min(seconds, left)

    @property
    def expired(self) -> bool:
        """Whether the deadline has passed."""
        left = self.time_left()
        return left is not None and left <= 0.0
