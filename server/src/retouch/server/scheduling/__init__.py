"""Fair, bounded scheduling of jobs onto provider capacity."""

from __future__ import annotations

from .eta import ServiceTimes
from .fairness import FairQueue
from .queue import PlaceListener, ProviderQueue, QueueLimits, QueuePlace, Slot
from .reporting import PlaceReporter
from .scheduler import Scheduler

__all__ = [
    "FairQueue",
    "PlaceListener",
    "PlaceReporter",
    "ProviderQueue",
    "QueueLimits",
    "QueuePlace",
    "Scheduler",
    "ServiceTimes",
    "Slot",
]
