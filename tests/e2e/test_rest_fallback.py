"""Two real ``rest`` plugin instances behind the server in ``staging``, each in front of
its own fake vendor (an aiohttp server speaking the JSON REST shape): fallback with one
charge, breakers that refuse without a request reaching either vendor, a probe that
closes them again, and the API keys only ever in the vendors' Authorization headers."""

from __future__ import annotations

import base64
import logging
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc import aio

from retouch.sdk import ENTRY_POINT_GROUP, decode_image, encode_png
from retouch.sdk.testing import FakeHttpServer, RecordedRequest, Reply
from retouch.server.app import RunningServer, running
from retouch.server.clock import ManualClock
from retouch.server.config import DEV_API_KEY, hash_key, load_config
from retouch.v1 import (
    account_pb2,
    account_pb2_grpc,
    common_pb2,
    image_edit_pb2_grpc,
    providers_pb2_grpc,
)
from tests.e2e.test_resilience import (
    assert_unmasked_pixels_are_the_inputs,
    breakers,
    inline,
    retry_delay,
)
from tests.helpers import metadata
from tests.policy.test_money import SUBJECT, grant, inpaint, outcome

INPAINT = ("POST", "/v1/images/inpaint")
KEYS = {"rest": "rk-vendor-a-5f0c1d2e3b4a", "rest-b": "rk-vendor-b-9e8d7c6b5a4f"}
COOL_DOWN_S = 30.0
ENTRIES = [
    EntryPoint("rest", "retouch.providers.rest:RestProvider", ENTRY_POINT_GROUP),
    EntryPoint("rest-b", "tests.e2e.rest_instances:SecondRest", ENTRY_POINT_GROUP),
]


def repainted(request: RecordedRequest) -> Reply:
    """A vendor that repaints the whole image, unmasked pixels included."""
    image = decode_image(base64.b64decode(request.json()["image"]), provider="fake")
    out = np.full_like(image, 77)
    return Reply.json({"image": base64.b64encode(encode_png(out)).decode()})


@dataclass
class Setup:
    server: RunningServer
    vendors: dict[str, FakeHttpServer]
    clock: ManualClock
    edit: Any
    account: Any
    providers: Any

    async def usage(self, subject: str) -> Any:
        return await self.account.GetUsage(
            account_pb2.GetUsageRequest(subject=subject), metadata=metadata()
        )

    def seen(self) -> tuple[int, ...]:
        """Inpaint requests each vendor received."""
        return tuple(len(v.requests_to(*INPAINT)) for v in self.vendors.values())


@pytest.fixture
async def setup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Setup]:
    caplog.set_level(logging.DEBUG)
    async with FakeHttpServer() as vendor_a, FakeHttpServer() as vendor_b:
        vendors = {"rest": vendor_a, "rest-b": vendor_b}
        tables = []
        for name, vendor in vendors.items():
            variable = f"RETOUCH_TEST_{name.upper().replace('-', '_')}_KEY"
            monkeypatch.setenv(variable, KEYS[name])
            vendor.route(*INPAINT, repainted)
            tables.append(
                textwrap.dedent(
                    f"""
                    [providers.{name}]
                    base_url = "{vendor.url}/v1"
                    api_key_env = "{variable}"
                    retry_attempts = 1

                    [providers.{name}.circuit_breaker]
                    failures = 1
                    cooldown_s = {COOL_DOWN_S}
                    """
                )
            )
        path = tmp_path / "retouch.toml"
        path.write_text(
            textwrap.dedent(
                f"""
                environment = "staging"
                tls_terminated_upstream = true
                listen = "127.0.0.1:0"
                data_dir = "{tmp_path / "data"}"

                [[tenants]]
                name = "dev"
                key_sha256 = "{hash_key(DEV_API_KEY)}"
                admin = true
                default_plan = "paid"

                [plans.paid]
                credits = true
                paid_providers = true
                """
            )
            + "".join(tables)
        )
        clock = ManualClock()
        async with (
            running(load_config(path), entries=ENTRIES, clock=clock) as server,
            aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
        ):
            assert sorted(server.registry.providers) == ["rest", "rest-b"]
            yield Setup(
                server,
                vendors,
                clock,
                image_edit_pb2_grpc.ImageEditStub(channel),
                account_pb2_grpc.AccountStub(channel),
                providers_pb2_grpc.ProvidersStub(channel),
            )
    for key in KEYS.values():
        assert key not in caplog.text


async def test_the_first_vendor_fails_and_the_second_one_does_the_job_for_one_charge(
    setup: Setup,
) -> None:
    setup.vendors["rest"].queue(*INPAINT, Reply.error(503))
    await grant(setup.account, 100)
    events = await outcome(setup.edit, inline())
    assert isinstance(events, list), events
    routing = events[0].accepted.routing
    assert (routing.chosen, list(routing.candidates)) == ("rest", ["rest", "rest-b"])
    assert events[-1].HasField("completed")
    assert setup.seen() == (1, 1)
    charged = events[-1].completed.cost_credits
    assert charged > 0
    usage = await setup.usage(SUBJECT)
    assert (usage.credits_balance, usage.credits_reserved, usage.quota_used) == (
        100 - charged,
        0,
        1,
    )
    assert await setup.server.ledger.audit(f"dev/{SUBJECT}")
    assert_unmasked_pixels_are_the_inputs(events[-1].completed.data)
    for name, vendor in setup.vendors.items():
        assert [r.bearer for r in vendor.requests_to(*INPAINT)] == [KEYS[name]]


async def test_both_vendors_down_then_refused_untouched_then_a_probe_closes_the_breaker(
    setup: Setup,
) -> None:
    setup.vendors["rest"].queue(*INPAINT, Reply.error(502))
    setup.vendors["rest-b"].queue(*INPAINT, Reply.error(503))
    await grant(setup.account, 100)
    failed = await outcome(setup.edit, inpaint())
    assert isinstance(failed, aio.AioRpcError)
    assert failed.code() == grpc.StatusCode.UNAVAILABLE
    assert retry_delay(failed) == COOL_DOWN_S
    assert setup.seen() == (1, 1)
    usage = await setup.usage(SUBJECT)
    assert (usage.credits_balance, usage.credits_reserved) == (100, 0)
    assert await setup.server.ledger.audit(f"dev/{SUBJECT}")
    states = await breakers(setup)
    assert {name: b.state for name, b in states.items()} == {
        "rest": common_pb2.CIRCUIT_STATE_OPEN,
        "rest-b": common_pb2.CIRCUIT_STATE_OPEN,
    }

    refused = await outcome(setup.edit, inpaint())
    assert isinstance(refused, aio.AioRpcError)
    assert refused.code() == grpc.StatusCode.UNAVAILABLE
    assert setup.seen() == (1, 1)  # no request reached either vendor
    assert (await setup.usage(SUBJECT)).credits_reserved == 0

    setup.clock.advance(COOL_DOWN_S)
    probed = await outcome(setup.edit, inpaint())
    assert isinstance(probed, list), probed
    assert probed[0].accepted.routing.chosen == "rest"
    assert setup.seen() == (2, 1)
    states = await breakers(setup)
    assert states["rest"].state == common_pb2.CIRCUIT_STATE_CLOSED
    assert states["rest-b"].state == common_pb2.CIRCUIT_STATE_HALF_OPEN
