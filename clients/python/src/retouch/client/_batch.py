"""``retouch batch``: inpaint every image of a folder, masks matched by name, N at once.

One line on stderr tracks the whole batch (a bar redrawn in place on a terminal); a
summary follows, one line per image, and the exit code is non-zero when any failed.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ._client import AsyncClient
from ._errors import RetouchError
from ._events import Progress
from ._terminal import bar, percent, timing

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass
class Item:
    """One image of the batch and what became of it."""

    image: Path
    mask: Path | None
    out: Path
    fraction: float = 0.0
    error: str = ""
    exit_code: int = 0
    done: bool = False


def plan(folder: Path, masks: Path | None, out: Path) -> list[Item]:
    """The batch's items: every image in ``folder`` (not the masks folder's), each with
    the file of the same stem in ``masks`` (any image suffix) as its mask."""
    items = []
    for image in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        mask = None
        if masks is not None:
            mask = next(
                (
                    masks / f"{image.stem}{s}"
                    for s in IMAGE_SUFFIXES
                    if (masks / f"{image.stem}{s}").is_file()
                ),
                None,
            )
        items.append(Item(image, mask, out / f"{image.stem}.inpaint.png"))
    return items


class BatchDisplay:
    """The batch's one progress line, and its summary."""

    def __init__(self, stream: IO[str], total: int, clock: Callable[[], float]) -> None:
        self._stream = stream
        self._total = total
        self._clock = clock
        self._started = clock()
        self._live = stream.isatty() if hasattr(stream, "isatty") else False

    def update(self, items: list[Item], *, final: bool = False) -> None:
        if not self._live and not final:
            return
        fraction = sum(1.0 if i.done else i.fraction for i in items) / max(1, self._total)
        finished = sum(i.done for i in items)
        failed = sum(bool(i.error) for i in items)
        line = (
            f"{bar(fraction)} {percent(fraction)} {finished}/{self._total} done, "
            f"{failed} failed, {timing(self._clock() - self._started, fraction)}"
        )
        self._stream.write(("\r" if self._live else "") + line + ("\n" if final else ""))
        self._stream.flush()


async def run_batch(
    client: AsyncClient,
    args: argparse.Namespace,
    stdout: IO[str],
    stderr: IO[str],
    exit_code: Callable[[RetouchError], int],
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Run the batch ``args`` describe; the worst exit code of its items."""
    folder, out = Path(args.folder), Path(args.out)
    masks = Path(args.masks) if args.masks else None
    for directory in (folder, out, *(() if masks is None else (masks,))):
        if not directory.is_dir():
            stderr.write(f"retouch: {directory}: no such directory\n")
            return 2
    items = plan(folder, masks, out)
    if not items:
        stderr.write(f"retouch: {folder}: no PNG, JPEG or WebP images\n")
        return 2
    display = BatchDisplay(stderr, len(items), clock)
    slots = asyncio.Semaphore(args.jobs)

    async def one(item: Item) -> None:
        if item.out.exists() and not args.force:
            item.error, item.exit_code = f"{item.out} exists; pass --force to overwrite it", 2
        elif masks is not None and item.mask is None:
            item.error, item.exit_code = f"no mask named {item.image.stem}.* in {masks}", 2
        else:
            async with slots:
                try:
                    job = client.inpaint(item.image, mask=item.mask)
                    async for event in job:
                        if isinstance(event, Progress):
                            item.fraction = event.fraction
                            display.update(items)
                    result = await job
                    await result.save(item.out)
                except RetouchError as error:
                    item.error, item.exit_code = str(error), exit_code(error)
                except OSError as error:
                    item.error, item.exit_code = f"{error.filename}: {error.strerror}", 2
        item.done = True
        display.update(items)

    async with asyncio.TaskGroup() as group:
        for item in items:
            group.create_task(one(item))
    display.update(items, final=True)
    for item in items:
        if item.error:
            stdout.write(f"failed  {item.image}: {item.error}\n")
        else:
            stdout.write(f"ok      {item.image} -> {item.out}\n")
    failed = [i for i in items if i.error]
    stdout.write(f"{len(items) - len(failed)} of {len(items)} succeeded, {len(failed)} failed\n")
    stdout.flush()
    return max((i.exit_code for i in failed), default=0)
