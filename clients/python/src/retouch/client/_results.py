"""A finished edit's result: its id and image info, its bytes, and saving it to a file."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from ._events import Accepted, Completed, ImageInfo

if TYPE_CHECKING:
    from ._client import AsyncClient


@dataclass(frozen=True, slots=True)
class ResultInfo:
    """What a successful job produced. Pass it as another edit's input to chain edits
    without downloading the pixels."""

    job_id: str
    result_id: str
    image: ImageInfo
    provider: str
    """Empty when the events naming it were not seen (``watch`` with ``after_seq``)."""
    model: str
    seed: int
    cost_credits: int
    provider_ms: int
    data: bytes | None
    """The encoded image when the edit asked for it inline; otherwise ``read`` fetches it."""

    @classmethod
    def of(cls, completed: Completed, accepted: Accepted | None, **extra: Any) -> Self:
        """The result ``completed`` reports, with the provider ``accepted`` named;
        ``extra`` fills the fields a subclass adds."""
        return cls(
            job_id=completed.job_id,
            result_id=completed.result_id,
            image=completed.image,
            provider=accepted.provider if accepted else "",
            model=accepted.model if accepted else "",
            seed=completed.seed,
            cost_credits=completed.cost_credits,
            provider_ms=completed.provider_ms,
            data=completed.data,
            **extra,
        )


@dataclass(frozen=True, slots=True)
class Result(ResultInfo):
    """A result of :class:`AsyncClient`, which can fetch its bytes."""

    client: AsyncClient = field(repr=False, compare=False, kw_only=True)

    async def read(self) -> bytes:
        """The encoded image: the inline bytes, or downloaded (again on every call)."""
        if self.data is not None:
            return self.data
        return b"".join([chunk async for chunk in self.client.download(self.result_id)])

    async def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the image to ``path`` (a directory gets ``<result_id><ext>`` in it) and
        return where it went. The file appears whole or not at all."""
        if self.data is None:
            return await self.client.download_to(self.result_id, path)
        target = output_path(path, self.result_id, self.image.extension)
        return await write_file(target, _once(self.data))


def output_path(path: str | os.PathLike[str], result_id: str, extension: str) -> Path:
    """``path``, or ``path/<result_id><extension>`` when it is a directory."""
    target = Path(path)
    if target.is_dir():
        return target / f"{result_id}{extension}"
    return target


async def write_file(target: Path, chunks: AsyncIterable[bytes]) -> Path:
    """Write ``chunks`` to ``target`` through a ``.part`` file renamed at the end, so a
    failed or cancelled transfer never leaves a truncated image behind."""
    partial = target.with_name(target.name + ".part")
    file = await asyncio.to_thread(partial.open, "wb")
    try:
        try:
            async for chunk in chunks:
                await asyncio.to_thread(file.write, chunk)
        finally:
            await asyncio.to_thread(file.close)
        await asyncio.to_thread(os.replace, partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
