"""Provider discovery: good plugins load, each broken one is reported by name and skipped."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from grpc import aio

from retouch.sdk import ENTRY_POINT_GROUP
from retouch.server.app import running
from retouch.server.config import ServerConfig
from retouch.server.registry import ProviderRegistry
from retouch.v1 import providers_pb2, providers_pb2_grpc
from tests.helpers import metadata


def entry(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


PLUGINS = "tests.server.broken_plugins"
ENTRIES = [
    entry("good", f"{PLUGINS}:Good"),
    entry("missing", "tests.server.no_such_module:Provider"),
    entry("no-manifest", f"{PLUGINS}:NoManifest"),
    entry("old-sdk", f"{PLUGINS}:OldSdk"),
    entry("sync-start", f"{PLUGINS}:SyncStart"),
    entry("bad-config", f"{PLUGINS}:BadConfig"),
    entry("explodes", f"{PLUGINS}:Explodes"),
    entry("misnamed", f"{PLUGINS}:Misnamed"),
]


async def test_broken_plugins_are_reported_by_name_and_skipped() -> None:
    registry = await ProviderRegistry.discover(configs={}, entries=ENTRIES)
    assert list(registry.providers) == ["good"]
    reasons = registry.broken
    assert set(reasons) == {e.name for e in ENTRIES} - {"good"}
    assert "cannot import" in reasons["missing"]
    assert "manifest" in reasons["no-manifest"]
    assert "SDK API 0" in reasons["old-sdk"]
    assert "start() must be an async method" in reasons["sync-start"]
    assert "colour" in reasons["bad-config"]
    assert "boom" in reasons["explodes"]
    assert "something-else" in reasons["misnamed"]


async def test_disabled_plugins_are_not_loaded() -> None:
    registry = await ProviderRegistry.discover(configs={}, entries=ENTRIES[:1], disabled=["good"])
    assert registry.providers == {}


async def test_the_installed_entry_points_include_opencv() -> None:
    registry = await ProviderRegistry.discover(configs={})
    assert "opencv" in registry.providers
    # Hosted plugins need their API's settings; without a config they are left out.
    assert all("rejected its configuration" in r for r in registry.broken.values()), registry.broken
    assert not {"opencv", "patchmatch"} & set(registry.broken)


async def test_hosted_providers_without_a_config_table_are_left_out_quietly() -> None:
    registry = await ProviderRegistry.discover(configs={})
    assert {"stability", "openai"} <= registry.unconfigured.keys()
    assert not {"stability", "openai"} & set(registry.providers)
    configured = await ProviderRegistry.discover(
        configs={"stability": {"api_key_env": "RETOUCH_TEST_STABILITY_KEY"}},
        environ={"RETOUCH_TEST_STABILITY_KEY": "sk-from-the-environment"},
    )
    try:
        assert "stability" in configured.providers
        assert "stability" not in configured.unconfigured
    finally:
        await configured.aclose()


async def test_a_server_with_broken_plugins_still_serves(tmp_path: Path) -> None:
    config = ServerConfig(listen="127.0.0.1:0", data_dir=tmp_path)
    async with (
        running(config, entries=ENTRIES) as server,
        aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        answer = await providers_pb2_grpc.ProvidersStub(channel).ListProviders(
            providers_pb2.ListProvidersRequest(), metadata=metadata()
        )
        assert [p.name for p in answer.providers] == ["good"]


@pytest.mark.parametrize("value", [f"{PLUGINS}:Good"])
async def test_provider_config_tables_reach_start(value: str) -> None:
    registry = await ProviderRegistry.discover(
        configs={"good": {"anything": 1}}, entries=[entry("good", value)]
    )
    assert "good" in registry.providers
