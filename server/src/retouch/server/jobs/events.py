"""What a job tells its followers, as plain data; :mod:`retouch.server.convert` turns
each into a ``JobEvent`` at the edge."""

from __future__ import annotations

from dataclasses import dataclass

from ..routing import Route
from ..scheduling import QueuePlace
from .records import ResultRecord


@dataclass(frozen=True, slots=True)
class Accepted:
    """The job was admitted: who runs it, what it is expected to cost, what is left."""

    route: Route
    seed: int
    input_size: tuple[int, int]
    quota_left: int
    """Jobs left this period after this one; -1 when the plan has no quota."""
    credits_left: int
    """Credits left after this job's hold; -1 when the plan does not charge credits."""


@dataclass(frozen=True, slots=True)
class Progressed:
    """The job moved on: a fraction of the whole (0..1) and what it is doing."""

    fraction: float
    stage: str
    queue: QueuePlace | None = None
    """Where the job waits, while its stage is ``queued``."""


@dataclass(frozen=True, slots=True)
class Completed:
    """The job succeeded; its result is stored."""

    result: ResultRecord
    seed: int
    cost_credits: int
    provider_ms: int


JobEventData = Accepted | Progressed | Completed
