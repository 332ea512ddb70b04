"""Timed calls from the bench's side of the wire."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from grpc import aio

from retouch.v1 import image_edit_pb2 as pb
from retouch.v1 import image_edit_pb2_grpc

from .echo_server import MAX_MESSAGE_BYTES, METHOD
from .processes import METADATA

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


def channel(port: int) -> aio.Channel:
    """A plaintext channel to a loopback port, with room for whole images."""
    return aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)


@dataclass(frozen=True, slots=True)
class CallTrace:
    """When each message of one streamed call arrived (``perf_counter`` seconds)."""

    started: float
    arrivals: tuple[float, ...]
    kinds: tuple[str, ...]
    last_bytes: int
    """Size of the last message: for a job, its serialized Completed event."""
    provider_ms: int = 0
    """For a job, the provider time its Completed event reports."""
    route: str = ""
    """For a job, ``provider/model`` as its Accepted event names them."""

    @property
    def total_ms(self) -> float:
        """Call start to the last message received."""
        return 1000 * (self.arrivals[-1] - self.started)

    @property
    def first_event_ms(self) -> float:
        return 1000 * (self.arrivals[0] - self.started)

    @property
    def progress_events(self) -> int:
        return self.kinds.count("progress")

    @property
    def max_gap(self) -> tuple[float, str]:
        """Longest wait (ms) between consecutive messages, and between which kinds."""
        gaps = [
            (1000 * (self.arrivals[i + 1] - self.arrivals[i]), f"{kind} -> {self.kinds[i + 1]}")
            for i, kind in enumerate(self.kinds[:-1])
        ]
        return max(gaps, default=(0.0, "none"))


async def inpaint(
    stub: image_edit_pb2_grpc.ImageEditAsyncStub,
    request: pb.InpaintRequest,
    metadata: tuple[tuple[str, str], ...] = METADATA,
    *,
    on_accepted: Callable[[], object] | None = None,
) -> CallTrace:
    """One Inpaint call up to its Completed event, which must carry the inline result;
    ``metadata`` names the caller (by default the development tenant). ``on_accepted`` is
    called when the Accepted event arrives: the job is admitted, queued or running."""
    arrivals: list[float] = []
    kinds: list[str] = []
    completed: pb.JobEvent | None = None
    route = ""
    started = time.perf_counter()
    async for event in stub.Inpaint(request, metadata=metadata):
        arrivals.append(time.perf_counter())
        kinds.append(str(event.WhichOneof("event")))
        if event.HasField("accepted"):
            route = f"{event.accepted.provider}/{event.accepted.model}"
            if on_accepted is not None:
                on_accepted()
        elif event.HasField("completed"):
            completed = event
    # The stream is read to its end rather than left at Completed: a call dropped early
    # is a cancellation, which could race the job's last bookkeeping.
    if completed is None or not completed.completed.data or kinds[-1] != "completed":
        raise RuntimeError(f"the job ended without an inline result; events: {kinds}")
    wanted = request.provider
    if wanted.provider and route != f"{wanted.provider}/{wanted.model or route.split('/')[-1]}":
        raise RuntimeError(f"asked for {wanted.provider}/{wanted.model}, the job ran on {route}")
    return CallTrace(
        started,
        tuple(arrivals),
        tuple(kinds),
        completed.ByteSize(),
        completed.completed.provider_ms,
        route,
    )


async def total_ms(call: Awaitable[CallTrace]) -> float:
    """The end-to-end milliseconds of ``call``, once it has ended."""
    return (await call).total_ms


class Echo:
    """Calls ``/bench.Echo/Stream`` with raw bytes."""

    def __init__(self, channel: aio.Channel) -> None:
        self._call = channel.unary_stream(
            METHOD, request_serializer=_identity, response_deserializer=_identity
        )

    async def __call__(self, payload: bytes) -> CallTrace:
        arrivals: list[float] = []
        last = b""
        started = time.perf_counter()
        async for reply in self._call(payload):
            arrivals.append(time.perf_counter())
            last = reply
        if not arrivals:
            raise RuntimeError("the echo server sent nothing")
        return CallTrace(started, tuple(arrivals), ("reply",) * len(arrivals), len(last))


def _identity(data: bytes) -> bytes:
    return data
