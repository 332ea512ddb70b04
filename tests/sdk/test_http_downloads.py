"""Downloads of provider output URLs: host allow-lists, address filters after DNS and
after every redirect, and the answer's size and type."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from retouch.sdk import JobContext, ProviderBadResponse
from retouch.sdk.http import (
    AddressPolicy,
    AddressRefused,
    GuardedResolver,
    HttpClient,
    HttpConfig,
    HttpRuntime,
)
from retouch.sdk.testing import FakeHttpServer, ManualClock, Reply

PNG = b"\x89PNG\r\n\x1a\nfake"


class StaticResolver(AbstractResolver):
    """Resolves names from a table, as a DNS server the test controls."""

    def __init__(self, table: dict[str, str]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        address = self.table[host]
        return [
            ResolveResult(
                hostname=host, host=address, port=port, family=socket.AF_INET, proto=0, flags=0
            )
        ]

    async def close(self) -> None:
        return None


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.9",
        "192.168.1.1",
        "169.254.169.254",
        "169.254.10.10",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fd00::1",
        "fd00:ec2::254",
        "::ffff:127.0.0.1",
        "100.100.100.200",
    ],
)
def test_the_default_policy_refuses_internal_addresses(address: str) -> None:
    assert not AddressPolicy().permits(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111"])
def test_the_default_policy_accepts_public_addresses(address: str) -> None:
    assert AddressPolicy().permits(address)


def test_allowing_a_network_never_lets_metadata_through() -> None:
    policy = AddressPolicy.allowing("127.0.0.1", "169.254.0.0/16")
    assert policy.permits("127.0.0.1")
    assert policy.permits(ipaddress.ip_address("169.254.1.1"))
    assert not policy.permits("169.254.169.254")
    assert not policy.permits("127.0.0.2")


async def test_the_guarded_resolver_filters_untrusted_hosts_only() -> None:
    table = {"cdn.example": "10.0.0.5", "api.internal": "10.0.0.6", "ok.example": "8.8.4.4"}
    resolver = GuardedResolver(
        AddressPolicy(), trusted=["api.internal"], resolver=StaticResolver(table)
    )
    with pytest.raises(AddressRefused, match=r"cdn\.example resolves to 10\.0\.0\.5"):
        await resolver.resolve("cdn.example", 443)
    assert (await resolver.resolve("api.internal", 443))[0]["host"] == "10.0.0.6"
    assert (await resolver.resolve("ok.example", 443))[0]["host"] == "8.8.4.4"


@pytest.fixture
async def api() -> AsyncIterator[FakeHttpServer]:
    async with FakeHttpServer() as server:
        yield server


def client_for(
    api: FakeHttpServer,
    *,
    hosts: tuple[str, ...],
    policy: AddressPolicy | None = None,
    resolver: AbstractResolver | None = None,
    max_bytes: int = 1024 * 1024,
) -> HttpClient:
    # The API itself lives on a name the test resolver knows, so the fake's loopback
    # address is the API host's only when a test says so.
    clock = ManualClock()
    config = HttpConfig(
        "https://api.example",
        download_hosts=hosts,
        download_schemes=frozenset({"http", "https"}),
        max_response_bytes=max_bytes,
        read_timeout=1.0,
    )
    runtime = HttpRuntime(
        clock=clock, sleep=clock.sleep, addresses=policy or AddressPolicy(), resolver=resolver
    )
    return HttpClient("acme", config, runtime=runtime)


def port_of(api: FakeHttpServer) -> int:
    return int(api.url.rsplit(":", 1)[1])


async def test_a_host_off_the_allow_list_is_refused_before_connecting(
    api: FakeHttpServer,
) -> None:
    async with client_for(api, hosts=("cdn.example",)) as http:
        with pytest.raises(ProviderBadResponse, match="not among its download hosts"):
            await http.download(api.url_for("/out.png"), context=JobContext("j"))
    assert api.requests == []


async def test_a_name_resolving_to_loopback_is_refused_after_dns(api: FakeHttpServer) -> None:
    resolver = StaticResolver({"cdn.example": "127.0.0.1"})
    async with client_for(api, hosts=("cdn.example",), resolver=resolver) as http:
        with pytest.raises(ProviderBadResponse, match=r"resolves to 127\.0\.0\.1"):
            await http.download(
                f"http://cdn.example:{port_of(api)}/out.png", context=JobContext("j")
            )
    assert resolver.asked == ["cdn.example"]
    assert api.requests == []


async def test_an_explicitly_allowed_loopback_name_downloads(api: FakeHttpServer) -> None:
    api.queue("GET", "/out.png", Reply.raw(PNG, "image/png"))
    resolver = StaticResolver({"cdn.example": "127.0.0.1"})
    policy = AddressPolicy.allowing("127.0.0.1")
    async with client_for(api, hosts=("*.example",), policy=policy, resolver=resolver) as http:
        response = await http.download(
            f"http://cdn.example:{port_of(api)}/out.png", context=JobContext("j")
        )
    assert response.body == PNG


async def test_every_redirect_hop_is_checked_again(api: FakeHttpServer) -> None:
    api.queue("GET", "/a", Reply.redirect("/b"))
    api.queue("GET", "/b", Reply.redirect("http://169.254.169.254/latest/meta-data/"))
    policy = AddressPolicy.allowing("127.0.0.1")
    async with client_for(api, hosts=("127.0.0.1", "169.254.169.254"), policy=policy) as http:
        with pytest.raises(ProviderBadResponse, match=r"169\.254\.169\.254 is a loopback"):
            await http.download(api.url_for("/a"), context=JobContext("j"))
    assert [r.path for r in api.requests] == ["/a", "/b"]


async def test_too_many_redirects_are_refused(api: FakeHttpServer) -> None:
    api.route("GET", "/loop", lambda _request: Reply.redirect("/loop"))
    policy = AddressPolicy.allowing("127.0.0.1")
    async with client_for(api, hosts=("127.0.0.1",), policy=policy) as http:
        with pytest.raises(ProviderBadResponse, match="redirected more than 3 times"):
            await http.download(api.url_for("/loop"), context=JobContext("j"))


async def test_a_download_must_be_an_image_under_the_cap(api: FakeHttpServer) -> None:
    api.queue("GET", "/page", Reply.wrong_type())
    api.queue("GET", "/big", Reply.oversize(5 * 1024 * 1024, content_type="image/png"))
    policy = AddressPolicy.allowing("127.0.0.1")
    async with client_for(api, hosts=("127.0.0.1",), policy=policy) as http:
        with pytest.raises(ProviderBadResponse, match="content type 'text/html'"):
            await http.download(api.url_for("/page"), context=JobContext("j"))
        with pytest.raises(ProviderBadResponse, match="over the 1048576 byte cap"):
            await http.download(api.url_for("/big"), context=JobContext("j"))


async def test_only_the_configured_schemes_are_fetched(api: FakeHttpServer) -> None:
    config = HttpConfig("https://api.example", download_hosts=("127.0.0.1",))
    async with HttpClient("acme", config) as http:
        with pytest.raises(ProviderBadResponse, match="only https URLs"):
            await http.download(api.url_for("/out.png"), context=JobContext("j"))


async def test_an_absolute_url_off_the_api_host_gets_the_download_checks(
    api: FakeHttpServer,
) -> None:
    async with client_for(api, hosts=()) as http:
        with pytest.raises(ProviderBadResponse, match="not among its download hosts"):
            await http.get_json("http://169.254.169.254/latest", context=JobContext("j"))
