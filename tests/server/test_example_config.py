"""The example config in docs/ is valid, names every setting, and runs a server;
``retouch-server check-config`` and ``--version`` answer without starting anything."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from retouch.server.__main__ import EXIT_BAD_CONFIG, EXIT_OK
from retouch.server.app import running
from retouch.server.config import _SCALARS, load_config
from retouch.v1 import providers_pb2, providers_pb2_grpc
from tests.server.test_command import server_command

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "retouch.example.toml"


def test_the_example_names_every_setting() -> None:
    raw = tomllib.loads(EXAMPLE.read_text())
    missing = set(_SCALARS) - set(raw)
    assert not missing, f"add {sorted(missing)} to docs/retouch.example.toml"
    config = load_config(EXAMPLE, environ={})
    assert config.environment == "staging"
    assert config.tls_terminated_upstream
    assert [t.name for t in config.tenants] == ["checkout", "ops"]
    assert sorted(config.plans.plans) == ["free", "pro"]


async def test_a_server_runs_from_the_example(tmp_path: Path) -> None:
    config = dataclasses.replace(
        load_config(EXAMPLE, environ={}),
        listen="127.0.0.1:0",
        results_http_listen="127.0.0.1:0",
        data_dir=tmp_path,
    )
    async with (
        running(config) as server,
        aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        stub: Any = health_pb2_grpc.HealthStub(channel)  # typeshed lacks the aio stub
        health = await stub.Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(aio.AioRpcError) as error:
            await providers_pb2_grpc.ProvidersStub(channel).ListProviders(
                providers_pb2.ListProvidersRequest(),
                metadata=(("authorization", "Bearer retouch-dev-key"),),
            )
        # The example configures its own tenants: the development key is not one.
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_check_config_accepts_the_example(tmp_path: Path) -> None:
    done = server_command("check-config", str(EXAMPLE), cwd=tmp_path)
    assert done.returncode == EXIT_OK, done.stderr
    assert "valid" in done.stdout
    assert "staging" in done.stdout
    assert not (tmp_path / ".retouch").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('environment = "production"\n', "development key"),
        ('environment = "staging"\n', "refuses plaintext"),
        ("max_pixels = 0\n", "max_pixels"),
        ('tls_cert_file = "/nonexistent/cert.pem"\n', "set together"),
        (
            'tls_cert_file = "/nonexistent/cert.pem"\ntls_key_file = "/nonexistent/key.pem"\n',
            "cannot read",
        ),
        ("listen = \n", "not valid TOML"),
    ],
)
def test_check_config_names_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    done = server_command("check-config", str(path), cwd=tmp_path)
    assert done.returncode == EXIT_BAD_CONFIG == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_check_config_of_a_missing_file(tmp_path: Path) -> None:
    done = server_command("check-config", str(tmp_path / "nope.toml"), cwd=tmp_path)
    assert done.returncode == EXIT_BAD_CONFIG
    assert "cannot read config file" in done.stderr


def test_both_commands_print_their_version(tmp_path: Path) -> None:
    server = server_command("--version", cwd=tmp_path)
    assert server.returncode == 0
    assert server.stdout.startswith("retouch-server ")
    client = subprocess.run(
        [sys.executable, "-m", "retouch.client.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert client.returncode == 0
    assert client.stdout.startswith("retouch ")
