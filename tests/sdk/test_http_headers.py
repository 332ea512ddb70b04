"""The HTTP client's own headers (its Authorization) go to the API host only."""

from __future__ import annotations

from retouch.sdk import InpaintRequest, Secret
from retouch.sdk.http import HttpClient, HttpConfig
from retouch.sdk.testing import FakeHttpServer, Reply, sample_context, sample_image, sample_mask


async def test_client_headers_reach_the_api_host_but_never_a_download_host() -> None:
    async with FakeHttpServer() as api, FakeHttpServer() as cdn:
        api.queue("GET", "/v1/thing", Reply.json({}))
        cdn.queue("GET", "/out.png", Reply.raw(b"\x89PNG", "image/png"))
        config = HttpConfig(
            base_url=api.url_for("/v1"),
            download_hosts=("localhost",),
            download_schemes=frozenset({"http"}),
            download_allow_networks=("127.0.0.1/32", "::1/128"),
        )
        headers = {"Authorization": Secret("Bearer sk-secret-123456")}
        request = InpaintRequest(sample_image(), sample_mask(), "m", 1)
        context = sample_context(request, trace_headers={"traceparent": "00-ab-cd-01"})
        async with HttpClient("demo", config, headers=headers) as client:
            await client.get_json("thing", context=context)
            await client.download(
                cdn.url_for("/out.png").replace("127.0.0.1", "localhost"), context=context
            )
        (call,) = api.requests_to("GET", "/v1/thing")
        assert call.bearer == "sk-secret-123456"
        (fetch,) = cdn.requests_to("GET", "/out.png")
        assert "Authorization" not in fetch.headers
        assert fetch.headers["traceparent"] == "00-ab-cd-01"
