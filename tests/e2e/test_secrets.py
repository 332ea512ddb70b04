"""Provider secrets: from the environment variables the config names, never from the
file, never in a log line, an error or a listing."""

from __future__ import annotations

import dataclasses
import logging
import textwrap
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from retouch.sdk import ENTRY_POINT_GROUP, Health, HealthReport, Secret
from retouch.server.app import running
from retouch.server.config import ConfigError, ServerConfig, load_config
from retouch.server.registry import ProviderRegistry
from retouch.v1 import image_edit_pb2_grpc, providers_pb2, providers_pb2_grpc
from tests.e2e.hosted_fakes import KeyedHosted
from tests.helpers import metadata
from tests.policy.test_money import inpaint

SECRET = "sk-live-7c1f0e9a2b3d4c5e"
VARIABLE = "RETOUCH_TEST_KEYED_TOKEN"
ENTRIES = [
    EntryPoint("keyed", "tests.e2e.hosted_fakes:KeyedHosted", ENTRY_POINT_GROUP),
    EntryPoint("keyed-start-fails", "tests.e2e.hosted_fakes:KeyedStartFails", ENTRY_POINT_GROUP),
    EntryPoint("good", "tests.server.broken_plugins:Good", ENTRY_POINT_GROUP),
]
KEYED = {"api_key_env": VARIABLE}


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog
    assert SECRET not in caplog.text


def staging(config: ServerConfig, **providers: dict[str, Any]) -> ServerConfig:
    return dataclasses.replace(
        config, environment="staging", providers=providers, tls_terminated_upstream=True
    )


async def test_the_key_comes_from_the_named_variable_as_a_secret_and_never_leaks(
    config: ServerConfig, monkeypatch: pytest.MonkeyPatch, logs: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(VARIABLE, SECRET)
    async with running(staging(config, keyed=KEYED), entries=ENTRIES[:1]) as server:
        keyed: Any = server.registry.providers["keyed"].provider
        assert isinstance(keyed, KeyedHosted)
        assert keyed.config is not None
        assert set(keyed.config) == {"api_key"}  # the provider never sees api_key_env
        assert isinstance(keyed.api_key, Secret)
        assert keyed.api_key.reveal() == SECRET
        assert SECRET not in f"{keyed.config} {keyed.config!r}"

        keyed.answer(keyed.echo_key())
        async with aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            edit = image_edit_pb2_grpc.ImageEditStub(channel)
            with pytest.raises(aio.AioRpcError) as failed:
                async for _ in edit.Inpaint(inpaint(), metadata=metadata()):
                    pass
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "invalid token ***" in (failed.value.details() or "")
            assert SECRET not in str(failed.value.trailing_metadata())
            keyed.health_report = HealthReport(
                Health.DEGRADED, f"the upstream says token {keyed.api_key.reveal()} is expiring"
            )
            await server.registry.refresh_health()
            listed = await providers_pb2_grpc.ProvidersStub(channel).ListProviders(
                providers_pb2.ListProvidersRequest(), metadata=metadata()
            )
            assert "token *** is expiring" in str(listed)
            assert SECRET not in str(listed)
            events = [e async for e in edit.Inpaint(inpaint(), metadata=metadata())]
            assert events[-1].HasField("completed")
            job = await server.store.get_job(events[-1].job_id)
            assert job is not None
        jobs = await server.store.list_jobs(job.owner, state=None, before_id=None, limit=10)
        failed_jobs = [r for r in jobs if r.error_message]
        assert failed_jobs
        assert all(SECRET not in r.error_message for r in failed_jobs)


async def test_a_missing_variable_leaves_that_provider_out_naming_the_variable(
    config: ServerConfig, monkeypatch: pytest.MonkeyPatch, logs: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(VARIABLE, raising=False)
    registry = await ProviderRegistry.discover(
        configs={"keyed": KEYED}, entries=[ENTRIES[0], ENTRIES[2]]
    )
    assert list(registry.providers) == ["good"]
    assert VARIABLE in registry.broken["keyed"]
    assert "api_key_env" in registry.broken["keyed"]
    assert any("keyed" in r.message and VARIABLE in r.getMessage() for r in logs.records)
    empty = await ProviderRegistry.discover(
        configs={"keyed": KEYED}, entries=ENTRIES[:1], environ={VARIABLE: ""}
    )
    assert VARIABLE in empty.broken["keyed"]


async def test_a_start_failure_that_echoes_the_key_is_reported_without_it(
    monkeypatch: pytest.MonkeyPatch, logs: pytest.LogCaptureFixture
) -> None:
    registry = await ProviderRegistry.discover(
        configs={"keyed-start-fails": KEYED}, entries=[ENTRIES[1]], environ={VARIABLE: SECRET}
    )
    assert registry.providers == {}
    assert "the upstream refused the key ***" in registry.broken["keyed-start-fails"]


def test_a_literal_key_in_the_file_is_refused_naming_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "retouch.toml"
    for table, setting in [
        (f'api_key = "{SECRET}"', "api_key"),
        (f'token = "{SECRET}"', "token"),
        (f'api_key_env = "{VARIABLE}"\nbearer = "x"\nbearer_env = "Y"', "bearer"),
    ]:
        path.write_text(f"[providers.replicate]\n{table}\n")
        with pytest.raises(ConfigError) as refused:
            load_config(path, environ={})
        message = str(refused.value)
        assert f"[providers.replicate] {setting}:" in message
        assert f'{setting}_env = "VAR"' in message
        assert SECRET not in message
    path.write_text("[providers.replicate]\napi_key_env = 42\n")
    with pytest.raises(ConfigError, match="api_key_env must be the name of an environment"):
        load_config(path, environ={})


def test_the_named_variable_stays_in_the_config_unresolved(tmp_path: Path) -> None:
    path = tmp_path / "retouch.toml"
    path.write_text(textwrap.dedent(f'[providers.replicate]\napi_key_env = "{VARIABLE}"\n'))
    config = load_config(path, environ={VARIABLE: SECRET})
    assert config.providers == {"replicate": {"api_key_env": VARIABLE}}
    assert SECRET not in repr(config)
