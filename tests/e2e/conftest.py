"""Fixtures of the end-to-end tests: a PKI made with trustme, and servers that use it.

The server presents a certificate for :data:`SERVER_NAME`; clients reach it at
127.0.0.1 and check that name with the server-name override, as behind a tunnel.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from retouch.server.app import RunningServer, running
from retouch.server.config import ServerConfig

SERVER_NAME = "retouch.internal"


@dataclass(frozen=True)
class Pki:
    """PEM files: the server's CA and certificate, and a client CA with one client."""

    ca: Path
    cert: Path
    key: Path
    client_ca: Path
    client_cert: Path
    client_key: Path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    server_ca, client_ca = trustme.CA(), trustme.CA()
    served = server_ca.issue_cert(SERVER_NAME)
    client = client_ca.issue_cert("checkout.clients.internal")
    files = Pki(*(tmp_path / f"{n}.pem" for n in ("ca", "cert", "key", "cca", "ccert", "ckey")))
    server_ca.cert_pem.write_to_path(str(files.ca))
    served.private_key_pem.write_to_path(str(files.key))
    files.cert.write_bytes(b"".join(blob.bytes() for blob in served.cert_chain_pems))
    client_ca.cert_pem.write_to_path(str(files.client_ca))
    client.private_key_pem.write_to_path(str(files.client_key))
    files.client_cert.write_bytes(b"".join(blob.bytes() for blob in client.cert_chain_pems))
    return files


def tls_config(config: ServerConfig, pki: Pki, *, mutual: bool) -> ServerConfig:
    return dataclasses.replace(
        config,
        tls_cert_file=str(pki.cert),
        tls_key_file=str(pki.key),
        tls_client_ca_file=str(pki.client_ca) if mutual else "",
    )


@pytest.fixture
async def tls_server(config: ServerConfig, pki: Pki) -> AsyncIterator[RunningServer]:
    async with running(tls_config(config, pki, mutual=False)) as started:
        yield started


@pytest.fixture
async def mtls_server(config: ServerConfig, pki: Pki) -> AsyncIterator[RunningServer]:
    async with running(tls_config(config, pki, mutual=True)) as started:
        yield started
