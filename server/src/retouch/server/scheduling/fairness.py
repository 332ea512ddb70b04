"""Fair order among waiting jobs: start-time fair queuing over tenants, weighted per
plan, then round robin over the subjects within a tenant.

Each tenant with waiting jobs carries a virtual start time for its next job; the
tenant with the earliest goes next, and each job it starts moves its time on by
``1 / weight``, so a weight of 2 starts two jobs for every one of a weight of 1, and 0.5
one for every two. A tenant that had nothing waiting joins at the virtual time of the
job that started last, never earlier (an idle tenant banks no credit for later). So a
tenant that sends 50 jobs at once starts one per turn like any other, and another
tenant's single job, arriving behind that burst, is the next to start. (Deficit round
robin, which this replaced, queued a newcomer behind the tenant that had just been
served, and a single job waited for two freed slots instead of one.) Within a tenant,
its subjects take turns one job each.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class _Tenant(Generic[T]):
    weight: float
    start: float
    """Virtual time at which this tenant's next job starts."""
    subjects: OrderedDict[str, deque[T]] = field(default_factory=OrderedDict)

    def take(self) -> T:
        subject, waiting = next(iter(self.subjects.items()))
        item = waiting.popleft()
        if waiting:
            self.subjects.move_to_end(subject)
        else:
            del self.subjects[subject]
        return item


class FairQueue(Generic[T]):
    """Waiting items, taken in the fair order the module docstring describes."""

    def __init__(self) -> None:
        self._tenants: OrderedDict[str, _Tenant[T]] = OrderedDict()
        self._size = 0
        self._virtual = 0.0
        """The start time of the item taken last."""

    def __len__(self) -> int:
        return self._size

    def push(self, item: T, *, tenant: str, subject: str, weight: float = 1.0) -> None:
        """Queue ``item`` for ``subject`` of ``tenant``; ``weight`` (> 0) is the
        tenant's share, from its plan."""
        if weight <= 0:
            raise ValueError("a tenant's weight must be positive")
        state = self._tenants.get(tenant)
        if state is None:
            state = self._tenants[tenant] = _Tenant(weight, self._virtual)
        state.weight = weight
        state.subjects.setdefault(subject, deque()).append(item)
        self._size += 1

    def pop(self) -> T:
        """The next item in fair order; raises IndexError when none waits."""
        if not self._size:
            raise IndexError("pop from an empty FairQueue")
        # The earliest start; among equals, the tenant that has waited longest.
        name, tenant = min(self._tenants.items(), key=lambda entry: entry[1].start)
        item = tenant.take()
        self._size -= 1
        self._virtual = tenant.start
        tenant.start += 1 / tenant.weight
        if not tenant.subjects:
            del self._tenants[name]
        return item

    def remove(self, item: T) -> bool:
        """Take ``item`` (that very object) out wherever it waits; False when it was
        not waiting."""
        for name, tenant in self._tenants.items():
            for subject, waiting in tenant.subjects.items():
                if any(queued is item for queued in waiting):
                    waiting.remove(item)
                    self._size -= 1
                    if not waiting:
                        del tenant.subjects[subject]
                    if not tenant.subjects:
                        del self._tenants[name]
                    return True
        return False

    def order(self) -> Iterator[T]:
        """Every waiting item, in the order :meth:`pop` would take them."""
        future = FairQueue[T]()
        for name, tenant in self._tenants.items():
            subjects = OrderedDict((key, deque(items)) for key, items in tenant.subjects.items())
            future._tenants[name] = _Tenant(tenant.weight, tenant.start, subjects)
        future._size = self._size
        future._virtual = self._virtual
        while future._size:
            yield future.pop()
