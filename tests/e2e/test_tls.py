"""TLS and mutual TLS over loopback, with CAs made in the test (trustme); the servers
and certificates are the fixtures of ``tests/e2e/conftest.py``."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import trustme
from grpc import aio

from retouch.client import TLS, AsyncClient, Unavailable
from retouch.client.cli import main
from retouch.server.app import RunningServer
from retouch.server.config import (
    DEV_API_KEY,
    ConfigError,
    ServerConfig,
    TenantConfig,
    hash_key,
)
from retouch.server.tls import server_credentials
from retouch.v1 import providers_pb2, providers_pb2_grpc
from tests.e2e.conftest import SERVER_NAME, Pki
from tests.helpers import metadata


async def list_providers(client: AsyncClient) -> list[str]:
    return [p.name for p in await client.providers()]


async def test_the_client_library_talks_tls_checking_the_server_name(
    tls_server: RunningServer, pki: Pki
) -> None:
    tls = TLS(ca_file=pki.ca, server_name=SERVER_NAME)
    async with AsyncClient(f"127.0.0.1:{tls_server.port}", api_key=DEV_API_KEY, tls=tls) as client:
        assert "opencv" in await list_providers(client)


async def test_a_stub_over_ssl_credentials_round_trips(tls_server: RunningServer, pki: Pki) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
    async with aio.secure_channel(
        f"127.0.0.1:{tls_server.port}",
        credentials,
        options=[("grpc.ssl_target_name_override", SERVER_NAME)],
    ) as channel:
        stub = providers_pb2_grpc.ProvidersStub(channel)
        found = await stub.ListProviders(providers_pb2.ListProvidersRequest(), metadata=metadata())
    assert found.providers


async def test_plaintext_and_untrusted_clients_are_refused(
    tls_server: RunningServer, pki: Pki
) -> None:
    address = f"127.0.0.1:{tls_server.port}"
    async with AsyncClient(address, api_key=DEV_API_KEY, timeout_s=5, retry=None) as plain:
        with pytest.raises(Unavailable):
            await plain.providers()
    other_ca = trustme.CA()
    untrusted = pki.ca.parent / "other-ca.pem"
    other_ca.cert_pem.write_to_path(str(untrusted))
    tls = TLS(ca_file=untrusted, server_name=SERVER_NAME)
    async with AsyncClient(address, api_key=DEV_API_KEY, tls=tls, timeout_s=5) as wrong:
        with pytest.raises(Unavailable):
            await wrong.providers()


async def test_mutual_tls_needs_a_client_certificate(mtls_server: RunningServer, pki: Pki) -> None:
    address = f"127.0.0.1:{mtls_server.port}"
    with_cert = TLS(
        ca_file=pki.ca,
        cert_file=pki.client_cert,
        key_file=pki.client_key,
        server_name=SERVER_NAME,
    )
    async with AsyncClient(address, api_key=DEV_API_KEY, tls=with_cert) as client:
        assert "opencv" in await list_providers(client)
    without = TLS(ca_file=pki.ca, server_name=SERVER_NAME)
    async with AsyncClient(address, api_key=DEV_API_KEY, tls=without, timeout_s=5) as client:
        with pytest.raises(Unavailable):
            await client.providers()


async def test_the_cli_takes_tls_options(
    mtls_server: RunningServer, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--server",
        f"127.0.0.1:{mtls_server.port}",
        "--ca-file",
        str(pki.ca),
        "--server-name",
        SERVER_NAME,
        "--cert-file",
        str(pki.client_cert),
        "--key-file",
        str(pki.client_key),
        "providers",
    ]
    code = await asyncio.to_thread(main, argv)
    assert code == 0, capsys.readouterr().err
    assert "opencv" in capsys.readouterr().out
    half = await asyncio.to_thread(main, [*argv[:-3], "providers"])
    assert half == 2
    assert "--cert-file and --key-file go together" in capsys.readouterr().err


REAL_TENANT = TenantConfig(name="checkout", key_sha256=hash_key("checkout-key"))


@pytest.mark.parametrize("environment", ["staging", "production"])
def test_plaintext_outside_local_and_test_is_refused(environment: str, pki: Pki) -> None:
    with pytest.raises(ConfigError, match="refuses plaintext"):
        ServerConfig(environment=environment, tenants=(REAL_TENANT,))  # type: ignore[arg-type]
    upstream = ServerConfig(
        environment=environment,  # type: ignore[arg-type]
        tenants=(REAL_TENANT,),
        tls_terminated_upstream=True,
    )
    assert not upstream.tls
    served = ServerConfig(
        environment=environment,  # type: ignore[arg-type]
        tenants=(REAL_TENANT,),
        tls_cert_file=str(pki.cert),
        tls_key_file=str(pki.key),
    )
    assert server_credentials(served) is not None


def test_tls_files_are_checked_before_start(pki: Pki) -> None:
    with pytest.raises(ConfigError, match="set together"):
        ServerConfig(tls_cert_file=str(pki.cert))
    with pytest.raises(ConfigError, match="needs tls_cert_file"):
        ServerConfig(tls_client_ca_file=str(pki.client_ca))
    missing = ServerConfig(tls_cert_file=str(pki.cert), tls_key_file=str(pki.ca.parent / "nope"))
    with pytest.raises(ConfigError, match="tls_key_file: cannot read"):
        server_credentials(missing)
    mismatched = ServerConfig(tls_cert_file=str(pki.cert), tls_key_file=str(pki.client_key))
    with pytest.raises(ConfigError, match="tls_cert_file / tls_key_file"):
        server_credentials(mismatched)
