"""A hosted provider's upstream concurrency limit holds across both replicas: the
permits live in the shared Redis, so two replicas with ``max_concurrency = 2`` each
still send it at most two calls at once."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import redis

from retouch.server.policy import Plan
from retouch.server.scheduling import QueueLimits
from retouch.server.scheduling.redis_permits import KEY_PREFIX
from tests.helpers import metadata, read_all
from tests.replicas.conftest import SUBJECT
from tests.scheduling.gated import GatedProvider
from tests.scheduling.test_queue import denoise

LIMIT = 2
JOBS = 7


class HostedGatedProvider(GatedProvider):
    """The gated provider, declared as calling a hosted API (``remote``)."""

    def __init__(self) -> None:
        super().__init__("hosted", capacity=8)
        self.manifest = dataclasses.replace(self.manifest, remote=True)


async def test_two_replicas_never_send_a_hosted_provider_more_than_its_limit(
    replicas: Any, redis_url: str
) -> None:
    hosted = HostedGatedProvider()  # one upstream API behind both replicas
    plan = Plan("metered", rate_per_s=1e6, burst=10**6, monthly_jobs=1000)
    async with replicas(
        plan=plan,
        first=[hosted],
        second=[hosted],
        queue_limits={"hosted": QueueLimits(max_concurrency=LIMIT)},
    ) as r:
        calls = [
            asyncio.create_task(
                read_all(r.both[i % 2].edit.Enhance(denoise(), metadata=metadata(subject=SUBJECT)))
            )
            for i in range(JOBS)
        ]
        await hosted.until_started(LIMIT)
        assert hosted.in_flight == LIMIT
        client = redis.Redis.from_url(redis_url)
        try:
            assert client.zcard(KEY_PREFIX + "hosted") == LIMIT  # the permits are in Redis
        finally:
            client.close()
        for started in range(LIMIT + 1, JOBS + 1):
            hosted.finish_one()
            await hosted.until_started(started)
            assert hosted.in_flight <= LIMIT
        for _ in range(LIMIT):
            hosted.finish_one()
        results = await asyncio.gather(*calls)
        assert all(events[-1].HasField("completed") for events in results)
        assert hosted.most_in_flight == LIMIT
        assert len(set(hosted.started)) == JOBS
