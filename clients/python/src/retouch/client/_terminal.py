"""What the CLI writes: a progress bar or plain lines on stderr, JSON, and tables."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import time
from collections.abc import Callable, Sequence
from enum import Enum
from typing import IO, Any

from ._events import Accepted, Completed, Event, Progress

BAR_WIDTH = 30


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types: dataclasses and named tuples become objects, enums
    their values, datetimes ISO 8601 strings, bytes base64."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value) if f.repr
        }
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return {key: jsonable(item) for key, item in value._asdict().items()}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    return value


def json_line(value: Any, stream: IO[str]) -> None:
    """Write ``value`` as one line of JSON and flush, so a reader sees it at once."""
    stream.write(json.dumps(jsonable(value), separators=(",", ":")) + "\n")
    stream.flush()


def event_json(event: Event) -> dict[str, Any]:
    """An event as a JSON object with its ``type`` first."""
    return {"type": event.kind, **jsonable(event)}


def describe(event: Event) -> str:
    """One line of plain text about an event."""
    if isinstance(event, Accepted):
        credits = (
            f", est. {event.estimated_cost_credits} credits" if event.estimated_cost_credits else ""
        )
        return f"accepted job {event.job_id}: {event.provider}/{event.model}{credits}"
    if isinstance(event, Progress):
        return f"progress {percent(event.fraction)} {event.stage}".rstrip()
    image = event.image
    return (
        f"completed job {event.job_id}: result {event.result_id} "
        f"({image.width}x{image.height} {image.content_type}, "
        f"{event.cost_credits} credits, {event.provider_ms} ms)"
    )


def percent(fraction: float) -> str:
    """``0.425`` as ``" 42%"`` (fixed width, so a redrawn bar does not jitter)."""
    return f"{int(max(0.0, min(1.0, fraction)) * 100):3d}%"


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """``[#########---------]`` filled to ``fraction``."""
    filled = int(max(0.0, min(1.0, fraction)) * width)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def duration(seconds: float) -> str:
    """``"7s"``, ``"2m05s"``: short and fixed in shape, for the bar."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    return f"{whole // 60}m{whole % 60:02d}s"


def timing(elapsed: float, fraction: float) -> str:
    """``"12s elapsed, ETA 30s"``: the ETA assumes the rest goes as fast as the start."""
    text = f"{duration(elapsed)} elapsed"
    if 0.0 < fraction < 1.0:
        text += f", ETA {duration(elapsed * (1.0 - fraction) / fraction)}"
    return text


class ProgressDisplay:
    """Shows a job's events on ``stream``: a bar redrawn in place on a terminal, one
    plain line per event otherwise (a log file or a pipe). The bar shows the time since
    the job was accepted and an estimate of the time left; ``clock`` is injected so the
    tests hold those figures without waiting."""

    def __init__(self, stream: IO[str], clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream
        self._live = _isatty(stream)
        self._drawn = False
        self._clock = clock
        self._started: float | None = None

    def show(self, event: Event) -> None:
        """Show one event."""
        if isinstance(event, Accepted) or self._started is None:
            self._started = self._clock()
        elapsed = self._clock() - self._started
        if not self._live:
            self._write(describe(event) + "\n")
            return
        if isinstance(event, Progress):
            line = (
                f"{bar(event.fraction)} {percent(event.fraction)} "
                f"{timing(elapsed, event.fraction)} {event.stage}"
            )
            self._write("\r" + line.ljust(BAR_WIDTH + 48)[: BAR_WIDTH + 48])
            self._drawn = True
            return
        if isinstance(event, Completed):
            done = f"{bar(1.0)} {percent(1.0)} {timing(elapsed, 1.0)}"
            self._write("\r" + done.ljust(BAR_WIDTH + 48) + "\n")
            self._drawn = False
        self._write(describe(event) + "\n")

    def message(self, text: str) -> None:
        """A line of text, after ending a bar in progress."""
        self.end()
        self._write(text + "\n")

    def end(self) -> None:
        """Leave the bar's line, if one is drawn."""
        if self._drawn:
            self._write("\n")
            self._drawn = False

    def _write(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns, two spaces apart, with a header row."""
    cells = [[str(h) for h in headers], *[[_cell(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines) + "\n"


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return str(value) if value != "" else "-"


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
