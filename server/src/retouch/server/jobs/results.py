"""The store stage: the provider's image finished, encoded and written to the object store."""

from __future__ import annotations

from retouch.sdk import RGBImage

from ..clock import Clock
from ..edits import PreparedEdit, keep_unedited, off_loop, runs_inline
from ..ids import new_id
from ..imaging import CONTENT_TYPES, encode_image
from ..storage import ObjectStore
from ..telemetry import stored_bytes
from .events import Progressed
from .live import LiveJob
from .records import JobRecord, ResultRecord
from .runner import PROVIDER_SHARE, ProviderOutcome
from .store import JobStore

SECONDS_PER_DAY = 86_400


def finish_and_encode(edit: PreparedEdit, provided: RGBImage) -> bytes:
    """The provider's image with the unedited pixels put back, encoded as asked.

    CPU work: call it off the event loop. ``edit.image`` is spent afterwards."""
    finished = keep_unedited(edit, provided)
    # A buffer of the server's own (the input composited over) is read by nothing after
    # this, so the encoder may reorder its channels where it is; the provider's own
    # array (an enhance's result) is left as it was handed over.
    output = edit.output
    return encode_image(finished, output.format, output.quality, in_place=finished is not provided)


class ResultWriter:
    """Writes results under ``results/<tenant>/<subject>/<job>.<ext>``."""

    def __init__(self, store: JobStore, objects: ObjectStore, clock: Clock) -> None:
        self._store = store
        self._objects = objects
        self._clock = clock

    async def write(
        self,
        job: JobRecord,
        edit: PreparedEdit,
        outcome: ProviderOutcome,
        live: LiveJob,
        *,
        retention_days: int,
    ) -> ResultRecord:
        """Store the result, readable at once but not yet durable: the settle stage
        (:class:`~.settle.Settlement`) makes it durable before it charges the job."""
        output = edit.output
        width, height = edit.output_size
        encoded_size = width * height * 3 // 4
        if not runs_inline(encoded_size):
            # An encode on the loop is over before a stream could send this, and the
            # Completed right behind it says more.
            live.publish(Progressed(PROVIDER_SHARE, "encode"))
        data = await off_loop(
            lambda: finish_and_encode(edit, outcome.result.image), size=encoded_size
        )
        tenant, subject = job.owner.split("/", 1)
        extension = output.format.lower().replace("jpeg", "jpg")
        key = f"results/{tenant}/{subject}/{job.job_id}.{extension}"
        content_type = CONTENT_TYPES[output.format]
        await self._objects.put(key, data, content_type=content_type, durable=False)
        stored_bytes(len(data), output.format)
        now = self._clock.now()
        result = ResultRecord(
            result_id=new_id("res", self._clock),
            job_id=job.job_id,
            owner=job.owner,
            object_key=key,
            content_type=content_type,
            format=output.format,
            width=width,
            height=height,
            size_bytes=len(data),
            created_at=now,
            expires_at=now + retention_days * SECONDS_PER_DAY if retention_days else 0.0,
        )
        await self._store.add_result(result)
        live.inline_data, live.result = data, result
        return result
