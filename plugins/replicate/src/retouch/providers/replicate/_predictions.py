"""Replicate's prediction object: what the create, get and cancel calls answer.

    {"id": "gm3qorzdhgbfurvjtvhg6dckhu", "status": "processing",
     "logs": " 45%|████▌     | 23/50 [00:02<00:02, 10.5it/s]",
     "output": ["https://replicate.delivery/.../out-0.png"], "error": null,
     "metrics": {"predict_time": 4.2}, "urls": {"get": "...", "cancel": "..."}}

``status`` is one of starting, processing, succeeded, failed, canceled (by its
creator, or by its ``Cancel-After`` deadline once running) and aborted (the deadline
passed before it started). ``output`` holds the model's output: for image models a
URL or a list of URLs (``data:`` URLs for small files in sync mode).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from retouch.sdk import ProviderBadResponse

PROVIDER = "replicate"

_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_PERCENT = re.compile(r"(\d{1,3})%\|")


class Status(enum.Enum):
    """A prediction's state."""

    STARTING = "starting"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    ABORTED = "aborted"

    @property
    def finished(self) -> bool:
        return self not in (Status.STARTING, Status.PROCESSING)


@dataclass(frozen=True, slots=True)
class Prediction:
    """The parts of a prediction the provider acts on."""

    id: str
    status: Status
    output_url: str | None
    error: str
    logs: str
    predict_time: float | None

    @property
    def percent(self) -> int | None:
        """The last percentage a progress bar (tqdm's ``45%|``) printed to the logs."""
        found = _PERCENT.findall(self.logs)
        return min(int(found[-1]), 100) if found else None

    @property
    def content_filtered(self) -> bool:
        """Whether the model's safety checker refused the output (Stable Diffusion
        models on Replicate fail with "NSFW content detected ...")."""
        return self.status is Status.FAILED and "nsfw" in self.error.lower()


def parse_prediction(body: object) -> Prediction:
    """The prediction in a decoded JSON answer; :class:`ProviderBadResponse` naming the
    field when it is not one."""
    if not isinstance(body, dict):
        raise _bad(f"answered a JSON {type(body).__name__} where a prediction object belongs")
    prediction_id = body.get("id")
    if not isinstance(prediction_id, str) or not _ID.fullmatch(prediction_id):
        raise _bad(f"answered a prediction without a usable id ({_show(prediction_id)})")
    raw_status = body.get("status")
    try:
        status = Status(raw_status)
    except ValueError:
        raise _bad(f"answered prediction {prediction_id} with status {_show(raw_status)}") from None
    output_url = None
    if status is Status.SUCCEEDED:
        output_url = _first_url(body.get("output"))
        if output_url is None:
            raise _bad(
                f"reported prediction {prediction_id} succeeded without an image URL in its "
                f"output ({_show(body.get('output'))})"
            )
    error = body.get("error")
    logs = body.get("logs")
    return Prediction(
        id=prediction_id,
        status=status,
        output_url=output_url,
        error=error if isinstance(error, str) else "" if error is None else str(error),
        logs=logs if isinstance(logs, str) else "",
        predict_time=_predict_time(body.get("metrics")),
    )


def _first_url(output: object) -> str | None:
    if isinstance(output, list):
        output = next((item for item in output if isinstance(item, str)), None)
    if isinstance(output, str) and output.startswith(("https://", "http://", "data:")):
        return output
    return None


def _predict_time(metrics: object) -> float | None:
    if not isinstance(metrics, dict):
        return None
    value = metrics.get("predict_time")
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        return None
    return float(value)


def _bad(problem: str) -> ProviderBadResponse:
    return ProviderBadResponse(f"provider {PROVIDER!r} {problem}")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
