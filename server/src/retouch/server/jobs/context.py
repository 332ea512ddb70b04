"""What the run stage tells a provider beyond the edit: short-lived links to the
inputs, and what the provider's reported usage costs the caller."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from retouch.sdk import Result

from ..edits import SourceFiles
from ..routing import Candidate
from ..storage import ObjectStore, PresigningStore

log = logging.getLogger(__name__)

INPUT_LINK_TTL_S = 900
"""How long a provider may fetch an input through its presigned URL."""

Presign = Callable[[str, int], Awaitable[str]]


class InputLinks:
    """Presigned URLs of a job's inputs, where the object store can make them.

    A :class:`~retouch.server.storage.PresigningStore` (S3 and its kin) can; stores
    without ``presigned_url`` (the filesystem, memory) give no links, and providers
    get the bytes only. Inputs sent inline have no object to link to.
    """

    def __init__(self, objects: ObjectStore, ttl_s: int = INPUT_LINK_TTL_S) -> None:
        self._presign: Presign | None = (
            objects.presigned_url if isinstance(objects, PresigningStore) else None
        )
        self._ttl_s = ttl_s

    @property
    def available(self) -> bool:
        return self._presign is not None

    async def for_sources(self, sources: SourceFiles) -> tuple[str | None, str | None]:
        """(image URL, mask URL), each ``None`` when there is none to give."""
        return await self._link(sources.image_key), await self._link(sources.mask_key)

    async def _link(self, key: str | None) -> str | None:
        if key is None or self._presign is None:
            return None
        try:
            return await self._presign(key, self._ttl_s)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A missing link only costs the provider an upload of the bytes it has.
            log.warning("could not presign input %s; the provider gets its bytes", key)
            return None


def actual_price(job_id: str, candidate: Candidate, result: Result, size: tuple[int, int]) -> int:
    """The credits to charge for ``result``: the price held, less the provider's
    estimate, plus the cost model's price for the usage it reported — never more than
    the price held (an overrun is logged), never below zero.

    Without reported usage the held price is charged, as before usage existed.
    """
    held = candidate.price
    if result.usage is None or held == 0:
        return held
    cost = candidate.loaded.manifest.cost
    actual = cost.actual_credits(result.usage, *size)
    charge = held - candidate.own_cost + actual
    if charge > held:
        log.warning(
            "job %s: provider %s reported usage costing %d credits, more than the %d "
            "estimated; charging the %d held",
            job_id,
            candidate.name,
            actual,
            candidate.own_cost,
            held,
        )
        return held
    return max(0, charge)
