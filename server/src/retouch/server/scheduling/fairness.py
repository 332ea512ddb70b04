"""Fair order among waiting jobs: deficit round robin over tenants, weighted per plan,
then round robin over the subjects within a tenant.

Each tenant with waiting jobs takes its turn in rotation; a turn lets it start as many
jobs as its weight has earned (a weight of 2 starts two jobs a turn, 0.5 one every other
turn). Within a tenant, its subjects take turns one job each. So a tenant that sends 50
jobs at once starts one per turn like any other, and another tenant's single job waits
for at most one job of each tenant ahead of it in the rotation.
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
    deficit: float = 0.0
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

    def __len__(self) -> int:
        return self._size

    def push(self, item: T, *, tenant: str, subject: str, weight: float = 1.0) -> None:
        """Queue ``item`` for ``subject`` of ``tenant``; ``weight`` (> 0) is the
        tenant's share per turn, from its plan."""
        if weight <= 0:
            raise ValueError("a tenant's weight must be positive")
        state = self._tenants.get(tenant)
        if state is None:
            state = self._tenants[tenant] = _Tenant(weight)
        state.weight = weight
        state.subjects.setdefault(subject, deque()).append(item)
        self._size += 1

    def pop(self) -> T:
        """The next item in fair order; raises IndexError when none waits."""
        if not self._size:
            raise IndexError("pop from an empty FairQueue")
        while True:
            name, tenant = next(iter(self._tenants.items()))
            if tenant.deficit < 1:
                tenant.deficit += tenant.weight
                if tenant.deficit < 1:
                    self._tenants.move_to_end(name)
                    continue
            item = tenant.take()
            tenant.deficit -= 1
            self._size -= 1
            if not tenant.subjects:
                del self._tenants[name]  # an idle tenant keeps no credit for later
            elif tenant.deficit < 1:
                self._tenants.move_to_end(name)
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
            future._tenants[name] = _Tenant(tenant.weight, tenant.deficit, subjects)
        future._size = self._size
        while future._size:
            yield future.pop()
