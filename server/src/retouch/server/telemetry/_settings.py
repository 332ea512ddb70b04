"""Reading the standard ``OTEL_*`` environment variables into one decision.

Telemetry is off unless the environment asks for it: it is on when any of
``OTEL_TRACES_EXPORTER``, ``OTEL_METRICS_EXPORTER``, ``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` is set,
and ``OTEL_SDK_DISABLED`` is not ``true``. Once on, each signal's exporter defaults to
``otlp``, as the OpenTelemetry specification says; ``none`` turns one signal off.
``OTEL_EXPORTER_OTLP_PROTOCOL`` (or the per-signal ``..._TRACES_PROTOCOL`` and
``..._METRICS_PROTOCOL``) picks OTLP over ``grpc`` (the default) or ``http/protobuf``;
the http/protobuf exporters read their endpoint, headers, timeout and certificates from
the process environment themselves, as the SDK documents.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from ..config import ConfigError

Exporter = Literal["otlp", "console"]
Protocol = Literal["grpc", "http/protobuf"]
PROTOCOLS: tuple[str, ...] = ("grpc", "http/protobuf")

EXPORTERS: tuple[str, ...] = ("otlp", "console", "none")
SWITCHES = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
)
"""Setting any of these turns telemetry on."""

DEFAULT_SERVICE_NAME = "retouch"
DEFAULT_EXCLUDED_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
"""Services left untraced and unmeasured: probes and tooling, not traffic."""


class TelemetryError(ConfigError):
    """The ``OTEL_*`` environment asks for something retouch cannot do."""


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    """What the environment asks telemetry to do."""

    traces: tuple[Exporter, ...] = ()
    metrics: tuple[Exporter, ...] = ()
    traces_endpoint: str | None = None
    """OTLP endpoint for spans; None lets the exporter use its default (localhost:4317)."""
    metrics_endpoint: str | None = None
    insecure: bool | None = None
    """``OTEL_EXPORTER_OTLP_INSECURE``; None lets the endpoint's scheme decide."""
    metric_interval_ms: float | None = None
    traces_protocol: Protocol = "grpc"
    metrics_protocol: Protocol = "grpc"
    service_name: str = DEFAULT_SERVICE_NAME
    resource_attributes: Mapping[str, str] = field(default_factory=dict)
    excluded_services: frozenset[str] = DEFAULT_EXCLUDED_SERVICES

    @property
    def enabled(self) -> bool:
        return bool(self.traces or self.metrics)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> TelemetrySettings:
        """The settings ``environ`` (default: the process environment) asks for."""
        env = os.environ if environ is None else environ
        if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return cls()
        if not any(env.get(name, "").strip() for name in SWITCHES):
            return cls()
        general_protocol = _protocol(env, "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        general = _text(env, "OTEL_EXPORTER_OTLP_ENDPOINT")
        insecure = _text(env, "OTEL_EXPORTER_OTLP_INSECURE")
        interval = _text(env, "OTEL_METRIC_EXPORT_INTERVAL")
        try:
            interval_ms = float(interval) if interval else None
        except ValueError:
            raise TelemetryError(
                f"OTEL_METRIC_EXPORT_INTERVAL={interval!r}: expected milliseconds"
            ) from None
        attributes = _resource_attributes(env.get("OTEL_RESOURCE_ATTRIBUTES", ""))
        service_name = (
            _text(env, "OTEL_SERVICE_NAME")
            or attributes.get("service.name")
            or DEFAULT_SERVICE_NAME
        )
        excluded = {s.strip() for s in env.get("OTEL_PYTHON_GRPC_EXCLUDED_SERVICES", "").split(",")}
        return cls(
            traces=_exporters(env, "OTEL_TRACES_EXPORTER"),
            metrics=_exporters(env, "OTEL_METRICS_EXPORTER"),
            traces_endpoint=_text(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or general,
            metrics_endpoint=_text(env, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or general,
            insecure=None if insecure is None else insecure.lower() == "true",
            metric_interval_ms=interval_ms,
            traces_protocol=_protocol(env, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", general_protocol),
            metrics_protocol=_protocol(
                env, "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", general_protocol
            ),
            service_name=service_name,
            resource_attributes=attributes,
            excluded_services=DEFAULT_EXCLUDED_SERVICES | (excluded - {""}),
        )


def _protocol(env: Mapping[str, str], name: str, default: Protocol) -> Protocol:
    value = env.get(name, "").strip()
    if not value:
        return default
    if value == "grpc":
        return "grpc"
    if value == "http/protobuf":
        return "http/protobuf"
    raise TelemetryError(
        f"{name}={value!r}: retouch exports OTLP over grpc or http/protobuf; "
        "set one of those or leave it unset"
    )


def _text(env: Mapping[str, str], name: str) -> str | None:
    return env.get(name, "").strip() or None


def _exporters(env: Mapping[str, str], name: str) -> tuple[Exporter, ...]:
    names = [n.strip().lower() for n in env.get(name, "otlp").split(",") if n.strip()]
    unknown = sorted(set(names) - set(EXPORTERS))
    if unknown:
        raise TelemetryError(
            f"{name}: unknown exporter {', '.join(unknown)}; use otlp, console or none"
        )
    chosen: list[Exporter] = []
    for exporter in names:
        if exporter == "otlp" and "otlp" not in chosen:
            chosen.append("otlp")
        elif exporter == "console" and "console" not in chosen:
            chosen.append("console")
    return tuple(chosen)


def _resource_attributes(raw: str) -> dict[str, str]:
    # The specification's format: comma-separated key=value pairs, values percent-encoded.
    attributes = {}
    for pair in raw.split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip():
            attributes[key.strip()] = urllib.parse.unquote(value.strip())
    return attributes
