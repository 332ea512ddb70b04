"""Assembling the server from its parts, and its life from start to graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from retouch.v1 import (
    account_pb2,
    account_pb2_grpc,
    image_edit_pb2,
    image_edit_pb2_grpc,
    providers_pb2,
    providers_pb2_grpc,
)

from .auth import KeyRing
from .breaker import Breakers
from .clock import Clock, SystemClock
from .config import ServerConfig
from .database.backends import Database, open_database
from .edits import EditPreparer
from .errors import Unavailable
from .health import HealthServicer
from .inputs import InputResolver
from .interceptors import AccessLogInterceptor, AuthInterceptor, RequestDecodingInterceptor
from .jobs import JobStore
from .jobs.context import InputLinks
from .jobs.manager import JobManager
from .jobs.pipeline import EditPipeline
from .jobs.results import ResultWriter
from .jobs.runner import ProviderRunner
from .jobs.settle import Settlement
from .listen import bind, check_address_free
from .policy import Ledger, Policy, RateLimiter
from .policy.shared_limits import open_rate_limiter
from .policy.upstream import UpstreamLimits
from .reflection import enable_reflection
from .registry import ProviderRegistry
from .result_links import ResultLinks, ResultUrlSigner, load_or_create_key
from .results_http import ResultsHttp
from .retention import ResultRetention
from .routing import Router
from .scheduling import Scheduler
from .scheduling.semaphore import Permits, open_permits
from .services import AccountService, ImageEditService, ProvidersService
from .storage import ObjectStore, PresigningStore, open_store
from .telemetry import Telemetry
from .tls import server_credentials
from .uploads import Uploads

log = logging.getLogger("retouch.server")

STREAMS_FLUSH_S = 1.0
"""Once the jobs have drained, how long calls still under way get to end on their own
(a failed job's stream sending its status, a unary call its answer) before gRPC cancels them."""

SERVICE_NAMES = (
    image_edit_pb2.DESCRIPTOR.services_by_name["ImageEdit"].full_name,
    providers_pb2.DESCRIPTOR.services_by_name["Providers"].full_name,
    account_pb2.DESCRIPTOR.services_by_name["Account"].full_name,
)


@dataclass
class RunningServer:
    """A started server: its port, and the parts tests and benchmarks may look at."""

    server: aio.Server
    port: int
    jobs: JobManager
    pipeline: EditPipeline
    upstream: UpstreamLimits
    registry: ProviderRegistry
    store: JobStore
    objects: ObjectStore
    uploads: Uploads
    retention: ResultRetention
    health: HealthServicer
    config: ServerConfig
    ledger: Ledger
    limiter: RateLimiter
    permits: Permits
    database: Database
    _background: list[asyncio.Task[None]]
    telemetry: Telemetry = field(default_factory=Telemetry.disabled)
    results_http: ResultsHttp | None = None
    """The HTTP route serving signed result URLs, where the object store cannot presign."""
    results_http_port: int = 0

    async def stop(self) -> None:
        """Stop taking jobs, let running ones finish within the grace, fail the rest, then
        stop serving.

        gRPC keeps serving while the jobs drain, so that a new edit is refused with the
        server's own UNAVAILABLE (and RetryInfo) rather than a transport error, and each
        failed job's stream ends with its recorded status rather than gRPC's "Cancelling
        all calls".
        """
        grace = self.config.shutdown_grace_s
        stop_by = asyncio.get_running_loop().time() + grace
        self.jobs.closing = True
        await self.health.enter_graceful_shutdown()
        await self.jobs.shutdown(grace)
        left = stop_by - asyncio.get_running_loop().time()
        await self.server.stop(max(left, STREAMS_FLUSH_S))
        # gRPC's stop does not wait for the handlers it cancelled: an upload's
        # clean-up must still reach the database before it closes.
        await self.uploads.drain()
        if self.results_http is not None:
            await self.results_http.stop()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.registry.aclose()
        await self.objects.aclose()
        await self.limiter.aclose()
        await self.permits.aclose()
        await self.database.close()
        await asyncio.to_thread(self.telemetry.shutdown)


async def start_server(
    config: ServerConfig,
    *,
    clock: Clock | None = None,
    registry: ProviderRegistry | None = None,
    entries: Iterable[EntryPoint] | None = None,
    objects: ObjectStore | None = None,
    rng: random.Random | None = None,
    telemetry: Telemetry | None = None,
) -> RunningServer:
    """Build and start a server for ``config``. ``listen`` may use port 0.

    ``telemetry`` defaults to what the ``OTEL_*`` environment variables ask for (off
    when they ask for nothing). A start that fails half-way closes what it had opened
    (object store, database, rate limiter, permits, providers), so nothing is left unclosed.
    """
    async with contextlib.AsyncExitStack() as opened:
        started = await _start(
            config,
            opened,
            clock=clock,
            registry=registry,
            entries=entries,
            objects=objects,
            rng=rng,
            telemetry=telemetry,
        )
        # Started: from here on RunningServer.stop closes everything.
        opened.pop_all()
        return started


async def _start(
    config: ServerConfig,
    opened: contextlib.AsyncExitStack,
    *,
    clock: Clock | None,
    registry: ProviderRegistry | None,
    entries: Iterable[EntryPoint] | None,
    objects: ObjectStore | None,
    rng: random.Random | None,
    telemetry: Telemetry | None,
) -> RunningServer:
    # Before anything else: a taken port is refused before any state is touched.
    check_address_free(config.listen)
    credentials = server_credentials(config)
    telemetry = telemetry or Telemetry.from_environ()
    clock = clock or SystemClock()
    config.data_dir.mkdir(parents=True, exist_ok=True)
    if registry is None:
        registry = await ProviderRegistry.discover(
            configs=config.providers, disabled=config.disabled_providers, entries=entries
        )
        opened.push_async_callback(registry.aclose)
    database = await open_database(
        config.database_url,
        pool_size=config.database_pool_size,
        timeout_s=config.database_timeout_s,
    )
    opened.push_async_callback(database.close)
    store = database.jobs
    objects = objects or open_store(config.object_store_url)
    opened.push_async_callback(objects.aclose)
    limiter = open_rate_limiter(
        config.rate_limiter,
        clock=clock,
        failure="closed" if config.rate_limiter_failure == "closed" else "open",
        timeout_s=config.rate_limiter_timeout_s,
        meter=(
            telemetry.meter_provider.get_meter("retouch.server")
            if telemetry.meter_provider is not None
            else None
        ),
    )
    opened.push_async_callback(limiter.aclose)
    permits = open_permits(
        config.rate_limiter,
        failure="closed" if config.rate_limiter_failure == "closed" else "open",
        timeout_s=config.rate_limiter_timeout_s,
    )
    opened.push_async_callback(permits.aclose)
    breakers = Breakers(clock, config.circuit_breakers)
    router = Router(registry, breakers=breakers, rules=config.routing_rules)
    upstream = UpstreamLimits(limiter, registry)
    ledger = database.ledger
    policy = Policy(
        plans=config.plans,
        tenants={t.name: t for t in config.tenants},
        ledger=ledger,
        limiter=limiter,
        clock=clock,
        environment=config.environment,
    )
    settlement = Settlement(store, ledger, objects, clock)
    jobs = JobManager(
        store,
        settlement,
        clock,
        replica_id=config.replica_id or _replica_id(),
        lease_s=config.job_lease_s,
    )
    # Jobs whose replica died while this one was down; never those of live replicas.
    await jobs.fail_expired()
    retention = ResultRetention(store, objects, clock)
    uploads = Uploads(
        store, objects, clock, max_bytes=config.max_upload_bytes, ttl_s=config.upload_ttl_s
    )
    server = aio.server(
        interceptors=[
            *telemetry.server_interceptors(),
            *([AccessLogInterceptor(clock)] if config.access_log else []),
            AuthInterceptor(KeyRing(config.tenants)),
            # Last, so that its refusal of a request that does not parse happens inside
            # the access log, and after auth has refused an unauthenticated caller.
            RequestDecodingInterceptor(),
        ],
        options=[
            ("grpc.max_receive_message_length", config.max_receive_message_bytes),
            ("grpc.max_send_message_length", config.max_send_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    results_http, results_http_port, links = await _result_links(config, store, objects, clock)
    if results_http is not None:
        opened.push_async_callback(results_http.stop)
    pipeline = EditPipeline(
        edits=EditPreparer(InputResolver(store, objects, clock), config, rng),
        policy=policy,
        router=router,
        upstream=upstream,
        store=store,
        jobs=jobs,
        runner=ProviderRunner(
            store=store,
            ledger=ledger,
            upstream=upstream,
            latency=router.latency,
            breakers=breakers,
            clock=clock,
            links=InputLinks(objects),
        ),
        results=ResultWriter(store, objects, clock),
        settlement=settlement,
        clock=clock,
        default_deadline_s=config.job_deadline_s,
        scheduler=Scheduler(clock, config.queue_limits, permits),
    )
    image_edit_pb2_grpc.add_ImageEditServicer_to_server(
        ImageEditService(
            pipeline=pipeline,
            jobs=jobs,
            store=store,
            objects=objects,
            uploads=uploads,
            download_chunk_bytes=config.download_chunk_bytes,
            max_send_message_bytes=config.max_send_message_bytes,
            links=links,
        ),
        server,
    )
    providers_pb2_grpc.add_ProvidersServicer_to_server(
        ProvidersService(registry, router.latency, breakers), server
    )
    account_pb2_grpc.add_AccountServicer_to_server(
        AccountService(policy=policy, pipeline=pipeline), server
    )
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    enable_reflection(
        (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name), server
    )
    port = bind(server, config.listen, credentials)
    await server.start()
    serving = health_pb2.HealthCheckResponse.SERVING
    await health.set("", serving)
    for name in SERVICE_NAMES:
        await health.set(name, serving)
    background = [
        asyncio.create_task(run_every(config.job_heartbeat_s, jobs.heartbeat), name="job leases"),
        asyncio.create_task(jobs.follow_cancel_requests(), name="cancel requests"),
        asyncio.create_task(
            run_every(config.sweep_interval_s, uploads.sweep), name="upload sweeper"
        ),
        asyncio.create_task(
            run_every(config.sweep_interval_s, jobs.settle_orphans), name="reservation sweeper"
        ),
        asyncio.create_task(
            run_every(config.sweep_interval_s, retention.sweep), name="result retention"
        ),
        # The router skips providers marked unavailable; keep their health current.
        asyncio.create_task(
            run_every(config.health_interval_s, registry.refresh_health), name="provider health"
        ),
    ]
    log.info(
        "retouch listening on %s (environment %s, %d provider(s): %s)",
        config.listen.rsplit(":", 1)[0] + f":{port}",
        config.environment,
        len(registry.providers),
        ", ".join(sorted(registry.providers)) or "none",
    )
    return RunningServer(
        server=server,
        port=port,
        jobs=jobs,
        pipeline=pipeline,
        upstream=upstream,
        registry=registry,
        store=store,
        objects=objects,
        uploads=uploads,
        retention=retention,
        health=health,
        config=config,
        ledger=ledger,
        limiter=limiter,
        permits=permits,
        database=database,
        _background=background,
        telemetry=telemetry,
        results_http=results_http,
        results_http_port=results_http_port,
    )


def _replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


async def _result_links(
    config: ServerConfig, store: JobStore, objects: ObjectStore, clock: Clock
) -> tuple[ResultsHttp | None, int, ResultLinks]:
    """How results get their ``result_url``: presigned by the store, or signed by this
    server and served from its own HTTP route (started here), or none when that is off."""
    address = config.results_http_address
    if isinstance(objects, PresigningStore) or not address:
        return (
            None,
            0,
            ResultLinks(objects, clock, expiry_s=config.result_url_expiry_s, signer=None),
        )
    key = load_or_create_key(config.result_url_key, config.data_dir)
    host = address.rpartition(":")[0].strip("[]")
    # The base URL needs the port, known only once listening: set it after the start.
    signer = ResultUrlSigner(key, base_url=config.results_base_url)
    http = ResultsHttp(store, objects, signer, clock)
    try:
        port = await http.start(address)
    except OSError:
        if config.results_http_listen:
            raise
        # Only the default (listen's port + 1) was taken: any free port serves as
        # well, since the links carry the port they were made with.
        port = await http.start(f"{address.rpartition(':')[0]}:0")
        log.warning("port %s was taken; serving result URLs on port %d", address, port)
    if not config.results_base_url:
        public_host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
        signer.base_url = f"http://{_bracketed(public_host)}:{port}"
    links = ResultLinks(objects, clock, expiry_s=config.result_url_expiry_s, signer=signer)
    return http, port, links


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def run_every(interval_s: float, work: Callable[[], Awaitable[object]]) -> None:
    name = getattr(work, "__name__", "work")
    unavailable = False
    while True:
        await asyncio.sleep(interval_s)
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Unavailable as exc:
            # An engine that is down: said once, not at every turn of every loop.
            if not unavailable:
                log.warning("periodic %s skipped until it can run again: %s", name, exc)
            unavailable = True
            continue
        except Exception:
            log.exception("periodic %s failed; will retry", name)
        else:
            if unavailable:
                log.info("periodic %s runs again", name)
        unavailable = False


@contextlib.asynccontextmanager
async def running(config: ServerConfig, **kwargs: object) -> AsyncIterator[RunningServer]:
    """``async with running(config) as server:`` — started, then stopped gracefully."""
    server = await start_server(config, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        await server.stop()


__all__ = ["RunningServer", "running", "start_server"]
