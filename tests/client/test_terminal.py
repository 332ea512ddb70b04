"""What the CLI draws: a bar redrawn in place on a terminal, plain lines elsewhere."""

from __future__ import annotations

import datetime as dt
import io
import json

from retouch.client import Accepted, Completed, Event, ImageInfo, JobState, Progress, Routing
from retouch.client._terminal import ProgressDisplay, event_json, jsonable, table

ROUTING = Routing(chosen="opencv", candidates=("opencv",), excluded=(), prefer="cost")
EVENTS: list[Event] = [
    Accepted("job_1", 1, "opencv", "telea", 2, None, 40, 7, 256, 256, ROUTING),
    Progress("job_1", 2, 0.5, "inpaint"),
    Completed("job_1", 3, "res_1", ImageInfo(256, 256, "png", 1234, "image/png"), 7, 2, 30),
]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class SteppedClock:
    """Moves on by ``step`` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_a_terminal_gets_a_bar_redrawn_in_place_with_elapsed_time_and_eta() -> None:
    screen = Terminal()
    # Accepted reads the clock twice (start, elapsed), Progress once: 20 s in at 50%.
    display = ProgressDisplay(screen, clock=SteppedClock(10.0))

    for event in EVENTS:
        display.show(event)

    text = screen.getvalue()
    assert text.startswith("accepted job job_1: opencv/telea, est. 2 credits\n")
    assert "\r[###############---------------]  50% 20s elapsed, ETA 20s inpaint" in text
    assert "\r[##############################] 100% 30s elapsed" in text
    assert text.endswith(
        "completed job job_1: result res_1 (256x256 image/png, 2 credits, 30 ms)\n"
    )


def test_a_pipe_gets_one_plain_line_per_event() -> None:
    log = io.StringIO()
    display = ProgressDisplay(log)

    for event in EVENTS:
        display.show(event)

    assert log.getvalue().splitlines() == [
        "accepted job job_1: opencv/telea, est. 2 credits",
        "progress  50% inpaint",
        "completed job job_1: result res_1 (256x256 image/png, 2 credits, 30 ms)",
    ]
    assert "\r" not in log.getvalue()


def test_events_and_values_become_plain_json() -> None:
    accepted = event_json(EVENTS[0])
    progress = event_json(Progress("job_1", 2, 0.25, "x", preview=b"\xff\xd8"))

    assert json.loads(json.dumps(accepted))["routing"]["candidates"] == ["opencv"]
    assert accepted["type"] == "accepted"
    assert accepted["quota_left"] is None
    assert progress["preview"] == "/9g="
    assert jsonable([JobState.RUNNING, dt.datetime(2026, 1, 2, tzinfo=dt.UTC)]) == [
        "running",
        "2026-01-02T00:00:00+00:00",
    ]


def test_tables_align_their_columns() -> None:
    text = table(["NAME", "STATE"], [("a-long-name", JobState.FAILED), ("b", None)])

    assert text.splitlines() == ["NAME         STATE", "a-long-name  failed", "b            -"]
