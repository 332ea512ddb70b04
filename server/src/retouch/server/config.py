"""Server configuration: one TOML file, environment overrides, embedded defaults.

With no file at all the server listens on 127.0.0.1:50051, keeps its state under
``.retouch/`` in the working directory, runs in the ``local`` environment, and accepts
the development key :data:`DEV_API_KEY`. Every scalar setting can be overridden by an
environment variable ``RETOUCH_<NAME>`` (``RETOUCH_LISTEN=0.0.0.0:50051``).

Example file::

    environment = "staging"
    listen = "0.0.0.0:50051"
    data_dir = "/var/lib/retouch"
    max_pixels = 16777216

    [[tenants]]
    name = "checkout"
    key_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

    [providers.opencv]
    inpaint_radius = 5

    [providers.replicate]
    api_key_env = "REPLICATE_API_TOKEN"   # the key itself never goes in this file

    max_concurrency = 4   # upstream calls at once; jobs beyond it queue
    max_queue = 64        # jobs that may wait; more are refused (RESOURCE_EXHAUSTED)
    max_wait_s = 120      # refuse a job that would wait longer than this

    [providers.replicate.circuit_breaker]
    failures = 5        # provider-side failures within window_s open the breaker
    window_s = 30
    cooldown_s = 30     # then one probe job; its success closes the breaker

    [[routing_rules]]   # ordered; see retouch.server.routing_rules
    name = "small-removals-stay-local"
    when = { mask_fraction_max = 0.3, prompt = false }
    choose = { kind = "local", prefer = "cost" }
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast, get_args

from .breaker import BreakerSettings, BreakerSettingsError
from .database.urls import DatabaseUrlError, default_url, dialect_of
from .policy.plans import DEFAULT_PLAN, Plan, PlanBook, PlanError
from .routing_rules import RoutingRule, RuleError, parse_rules
from .scheduling import QueueLimits
from .secrets import bad_variable_names, literal_secrets

Environment = Literal["local", "test", "staging", "production"]
ENVIRONMENTS: tuple[str, ...] = get_args(Environment)
PLAINTEXT_ENVIRONMENTS = ("local", "test")
"""Where the server may listen without TLS and without saying why."""

DEV_API_KEY = "retouch-dev-key"
"""The development key README uses. The ``production`` environment refuses it."""

MiB = 1024 * 1024


def hash_key(api_key: str) -> str:
    """The SHA-256 hex digest under which an API key is configured."""
    return hashlib.sha256(api_key.encode()).hexdigest()


class ConfigError(ValueError):
    """The configuration is invalid; the message names the setting."""


@dataclass(frozen=True, slots=True)
class TenantConfig:
    """A calling service and the hash of its API key."""

    name: str
    key_sha256: str
    admin: bool = False
    default_plan: str = DEFAULT_PLAN.name
    """The plan of this tenant's subjects until SetPlan puts them on another."""
    rate_per_s: float = 100.0
    """Requests per second for the whole tenant (token bucket refill)."""
    burst: int = 200

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"tenant name {self.name!r}: use letters, digits, '-' or '_'")
        digest = self.key_sha256.lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ConfigError(f"tenant {self.name!r}: key_sha256 must be 64 hex digits")
        if self.rate_per_s <= 0 or self.burst < 1:
            raise ConfigError(f"tenant {self.name!r}: rate_per_s and burst must be positive")


DEV_TENANT = TenantConfig(name="dev", key_sha256=hash_key(DEV_API_KEY), admin=True)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything the server reads at start-up."""

    listen: str = "127.0.0.1:50051"
    data_dir: Path = Path(".retouch")
    environment: Environment = "local"
    log_level: str = "INFO"
    max_pixels: int = 16_777_216
    """Largest input image accepted, in pixels (4096 x 4096)."""
    max_output_pixels: int = 67_108_864
    max_receive_message_bytes: int = 32 * MiB
    max_send_message_bytes: int = 64 * MiB
    max_upload_bytes: int = 64 * MiB
    upload_ttl_s: int = 3600
    download_chunk_bytes: int = 1 * MiB
    shutdown_grace_s: float = 10.0
    job_deadline_s: float = 600.0
    """How long a job may run when its caller set no gRPC deadline."""
    job_lease_s: float = 10.0
    """How long a replica holds a job it runs without renewing; a job whose replica
    stopped renewing is failed and refunded within twice this."""
    job_heartbeat_s: float = 3.0
    """How often a replica renews its leases and looks for expired ones; shorter than
    ``job_lease_s``, so a live replica renews each lease before it runs out. The renewal
    also brings the cancel requests for its jobs, so CancelJob reaches a job within this
    long even when the LISTEN connection that brings it at once has dropped."""
    replica_id: str = ""
    """Names this replica on the jobs it runs; empty makes one per process."""
    sweep_interval_s: float = 60.0
    health_interval_s: float = 15.0
    """How often providers are asked for their health."""
    object_store: str = ""
    """``file:///path``, ``memory://`` or ``s3://bucket[/prefix]?endpoint_url=…&region=…``
    (credentials from the standard AWS chain); empty means ``<data_dir>/objects``."""
    result_url_expiry_s: int = 900
    """How long a ``result_url`` (S3 presigned, or signed by this server) stays valid."""
    results_http_listen: str = ""
    """Where this server serves results over HTTP for ``result_url`` when the object
    store cannot presign (file:// and memory://): ``host:port`` (port 0 picks a free
    one), ``off``, or empty for ``listen``'s host and port + 1 (127.0.0.1:50052 by
    default; port 0 when ``listen``'s is 0)."""
    results_base_url: str = ""
    """The public base of those URLs, for a proxy in front; empty means
    ``http://<results_http_listen>``."""
    result_url_key: str = ""
    """Hex HMAC key signing result URLs; empty means one generated and kept in
    ``<data_dir>/result-url.key`` (replicas sharing results over HTTP must share it)."""
    rate_limiter: str = "memory://"
    """``memory://`` (this process) or ``redis://host:port/db`` (shared by replicas)."""
    rate_limiter_failure: str = "open"
    """When Redis is unreachable: ``open`` decides with a local bucket (and warns),
    ``closed`` refuses with UNAVAILABLE (reason ``RATE_LIMITER_UNAVAILABLE``)."""
    rate_limiter_timeout_s: float = 0.05
    """The bound on each Redis call, connecting included."""
    database: str = ""
    """``sqlite:///path`` (embedded) or ``postgresql://user@host:port/db`` (shared by
    replicas) for jobs, events, results, uploads, the ledger, plans and idempotency keys;
    empty means ``<data_dir>/retouch.db``."""
    database_pool_size: int = 10
    """Most PostgreSQL connections one replica opens (besides one for LISTEN)."""
    database_timeout_s: float = 4.0
    """The bound on each PostgreSQL call, waiting for a connection included: past it, or
    when PostgreSQL cannot be reached, the call fails UNAVAILABLE (reason
    ``DATABASE_UNAVAILABLE``)."""
    tenants: tuple[TenantConfig, ...] = (DEV_TENANT,)
    providers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per-provider config tables, passed to each provider's ``start`` (``<name>_env``
    settings resolved from the environment as secrets)."""
    circuit_breakers: Mapping[str, BreakerSettings] = field(default_factory=dict)
    """Per-provider breaker settings, from ``[providers.<name>.circuit_breaker]``."""
    queue_limits: Mapping[str, QueueLimits] = field(default_factory=dict)
    """Per-provider queue settings (``max_concurrency``, ``max_queue``, ``max_wait_s``),
    taken from ``[providers.<name>]``."""
    routing_rules: tuple[RoutingRule, ...] = ()
    """Ordered ``[[routing_rules]]``; the first that matches a job orders its providers."""
    disabled_providers: tuple[str, ...] = ()
    plans: PlanBook = field(default_factory=PlanBook)
    """Plans by name, from ``[plans.<name>]`` tables; one generous default otherwise."""
    tls_cert_file: str = ""
    """PEM certificate chain the server presents. With ``tls_key_file`` the server
    speaks TLS only."""
    tls_key_file: str = ""
    """PEM private key of ``tls_cert_file``."""
    tls_client_ca_file: str = ""
    """PEM CA bundle: when set, every client must present a certificate it signed
    (mutual TLS)."""
    tls_terminated_upstream: bool = False
    """Outside ``local`` and ``test`` plaintext is refused unless this says that a
    proxy or load balancer in front of the server terminates TLS."""
    access_log: bool = True
    """One line per RPC on the ``retouch.access`` logger (JSON with
    ``RETOUCH_LOG_FORMAT=json``)."""

    def __post_init__(self) -> None:
        if self.environment not in ENVIRONMENTS:
            raise ConfigError(
                f"environment {self.environment!r}: expected one of {', '.join(ENVIRONMENTS)}"
            )
        for name in (
            "max_pixels",
            "max_output_pixels",
            "max_receive_message_bytes",
            "max_send_message_bytes",
            "max_upload_bytes",
            "upload_ttl_s",
            "download_chunk_bytes",
            "database_pool_size",
            "database_timeout_s",
            "result_url_expiry_s",
            "rate_limiter_timeout_s",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.rate_limiter_failure not in ("open", "closed"):
            raise ConfigError(
                f"rate_limiter_failure {self.rate_limiter_failure!r}: expected open or closed"
            )
        if self.rate_limiter.split("://", 1)[0].lower() not in (
            "memory",
            "redis",
            "rediss",
            "unix",
        ):
            raise ConfigError(
                f"rate_limiter {self.rate_limiter!r}: use memory:// or redis://host:port/db"
            )
        if self.sweep_interval_s <= 0 or self.health_interval_s <= 0:
            raise ConfigError("sweep_interval_s and health_interval_s must be positive")
        if self.job_deadline_s <= 0:
            raise ConfigError("job_deadline_s must be positive")
        if not 0 < self.job_heartbeat_s < self.job_lease_s:
            raise ConfigError("job_heartbeat_s must be positive and shorter than job_lease_s")
        if self.shutdown_grace_s < 0:
            raise ConfigError("shutdown_grace_s cannot be negative")
        if not self.tenants:
            raise ConfigError("at least one tenant must be configured")
        if self.database:
            try:
                dialect_of(self.database)
            except DatabaseUrlError as exc:
                raise ConfigError(str(exc)) from exc
        names = [t.name for t in self.tenants]
        if len(set(names)) != len(names):
            raise ConfigError("tenant names must be unique")
        for tenant in self.tenants:
            if self.plans.get(tenant.default_plan) is None:
                raise ConfigError(
                    f"tenant {tenant.name!r}: default_plan {tenant.default_plan!r} is not a "
                    f"configured plan ({', '.join(sorted(self.plans.plans))})"
                )
        if self.environment == "production" and any(
            t.key_sha256 == DEV_TENANT.key_sha256 for t in self.tenants
        ):
            raise ConfigError(
                "the production environment refuses the development key: "
                "configure [[tenants]] with your own key hashes"
            )
        self._check_tls()

    def _check_tls(self) -> None:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError("tls_cert_file and tls_key_file must be set together")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ConfigError(
                "tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file too"
            )
        if (
            self.environment not in PLAINTEXT_ENVIRONMENTS
            and not self.tls_cert_file
            and not self.tls_terminated_upstream
        ):
            raise ConfigError(
                f"the {self.environment} environment refuses plaintext: set tls_cert_file "
                "and tls_key_file, or tls_terminated_upstream = true when a proxy in front "
                "of the server terminates TLS"
            )

    @property
    def tls(self) -> bool:
        """Whether the server itself speaks TLS."""
        return bool(self.tls_cert_file)

    @property
    def database_url(self) -> str:
        return self.database or default_url(self.data_dir)

    @property
    def results_http_address(self) -> str:
        """Where the result route listens, or "" when it is off."""
        if self.results_http_listen == "off":
            return ""
        if self.results_http_listen:
            return self.results_http_listen
        host, _, port = self.listen.rpartition(":")
        return f"{host}:{int(port) + 1 if port.isdigit() and int(port) else 0}"

    @property
    def object_store_url(self) -> str:
        return self.object_store or (self.data_dir / "objects").resolve().as_uri()


TABLES = (
    "tenants",
    "providers",
    "disabled_providers",
    "plans",
    "circuit_breakers",
    "queue_limits",
    "routing_rules",
)
_SCALARS = {f.name: f for f in dataclasses.fields(ServerConfig) if f.name not in TABLES}


def load_config(
    path: Path | None = None, *, environ: Mapping[str, str] | None = None
) -> ServerConfig:
    """Read ``path`` (or ``$RETOUCH_CONFIG``, or nothing) and apply ``RETOUCH_*`` overrides."""
    env = os.environ if environ is None else environ
    if path is None and env.get("RETOUCH_CONFIG"):
        path = Path(env["RETOUCH_CONFIG"])
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    return _build(raw, env)


def _build(raw: Mapping[str, Any], env: Mapping[str, str]) -> ServerConfig:
    values: dict[str, Any] = {}
    # Breaker settings live in their provider's table, not at the top level.
    unknown = set(raw) - set(_SCALARS) - (set(TABLES) - {"circuit_breakers", "queue_limits"})
    if unknown:
        raise ConfigError(f"unknown config settings: {', '.join(sorted(unknown))}")
    for name, spec in _SCALARS.items():
        if name in raw:
            values[name] = _coerce(name, raw[name], spec.type)
        env_name = f"RETOUCH_{name.upper()}"
        if env_name in env:
            values[name] = _coerce(env_name, env[env_name], spec.type)
    if "tenants" in raw:
        try:
            values["tenants"] = tuple(TenantConfig(**t) for t in raw["tenants"])
        except TypeError as exc:
            raise ConfigError(f"[[tenants]]: {exc}") from exc
    if "providers" in raw:
        providers = raw["providers"]
        if not isinstance(providers, dict) or not all(
            isinstance(v, dict) for v in providers.values()
        ):
            raise ConfigError("[providers.<name>] entries must be tables")
        values["providers"], values["circuit_breakers"] = _provider_tables(providers)
        values["queue_limits"] = _queue_limits(values["providers"])
    if "plans" in raw:
        tables = raw["plans"]
        if not isinstance(tables, dict) or not all(isinstance(t, dict) for t in tables.values()):
            raise ConfigError("[plans.<name>] entries must be tables")
        try:
            values["plans"] = PlanBook(
                {name: Plan.from_table(name, table) for name, table in tables.items()}
            )
        except PlanError as exc:
            raise ConfigError(str(exc)) from exc
    if "routing_rules" in raw:
        try:
            values["routing_rules"] = parse_rules(raw["routing_rules"])
        except RuleError as exc:
            raise ConfigError(str(exc)) from exc
    if "disabled_providers" in raw:
        values["disabled_providers"] = tuple(str(p) for p in raw["disabled_providers"])
    return ServerConfig(**values)


def _provider_tables(
    tables: Mapping[str, Mapping[str, Any]],
) -> tuple[dict[str, dict[str, Any]], dict[str, BreakerSettings]]:
    """Each provider's own settings, and the server's breaker settings taken out of them."""
    providers: dict[str, dict[str, Any]] = {}
    breakers: dict[str, BreakerSettings] = {}
    for name, table in tables.items():
        literal = literal_secrets(table)
        if literal:
            # Named, never shown: the value is the secret.
            raise ConfigError(
                f"[providers.{name}] {literal[0]}: secrets never go in the config file; name "
                f'the environment variable that holds it instead: {literal[0]}_env = "VAR"'
            )
        misnamed = bad_variable_names(table)
        if misnamed:
            raise ConfigError(
                f"[providers.{name}] {misnamed[0]} must be the name of an environment variable"
            )
        own = dict(table)
        breaker = own.pop("circuit_breaker", None)
        if breaker is not None:
            if not isinstance(breaker, dict):
                raise ConfigError(f"[providers.{name}.circuit_breaker] must be a table")
            try:
                breakers[name] = BreakerSettings.from_table(name, breaker)
            except BreakerSettingsError as exc:
                raise ConfigError(str(exc)) from exc
        providers[name] = own
    return providers, breakers


QUEUE_SETTINGS = ("max_concurrency", "max_queue", "max_wait_s")


def _queue_limits(providers: dict[str, dict[str, Any]]) -> dict[str, QueueLimits]:
    """The queue settings taken out of each provider's table (the provider never sees
    them: the server queues for it)."""
    limits: dict[str, QueueLimits] = {}
    for name, table in providers.items():
        settings = {key: table.pop(key) for key in QUEUE_SETTINGS if key in table}
        if not settings:
            continue
        try:
            limits[name] = QueueLimits(**settings)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"[providers.{name}] {exc}") from exc
    return limits


def _coerce(name: str, value: object, annotation: object) -> object:
    kind = str(annotation)
    try:
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError
            return int(cast(Any, value))
        if kind == "float":
            return float(cast(Any, value))
        if kind == "Path":
            return Path(str(value))
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        return str(value)
    except ValueError as exc:
        raise ConfigError(f"{name}: {value!r} is not a valid {kind}") from exc
