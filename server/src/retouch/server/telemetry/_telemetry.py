"""One server's telemetry: its own tracer and meter providers, never the global ones.

OpenTelemetry's global providers can be set once per process; a :class:`Telemetry`
holds its own instead, so every server (and every test) gets exactly the pipeline it
was built with. Nothing of the OpenTelemetry SDK is imported while telemetry is off.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from grpc import aio
from opentelemetry.trace import Tracer

from ._hooks import _disable, _enable
from ._metrics import NOOP_INSTRUMENTS, Instruments
from ._names import INSTRUMENTATION_SCOPE
from ._settings import TelemetrySettings

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter


log = logging.getLogger("retouch.server.telemetry")

SHUTDOWN_TIMEOUT_S = 2.0
"""The longest a stopping server waits for its exporters."""


def _server_version() -> str:
    try:
        return version("retouch-server")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


class Telemetry:
    """Tracing and metrics for one server, on or off.

    Build it with :meth:`from_environ` (what ``start_server`` does), :meth:`disabled`,
    or :meth:`create` with exporters of your own. Give it to ``start_server``, which
    installs :meth:`server_interceptors` and calls :meth:`shutdown` when it stops.
    """

    def __init__(
        self,
        settings: TelemetrySettings,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.settings = settings
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.tracer: Tracer | None = (
            tracer_provider.get_tracer(INSTRUMENTATION_SCOPE, _server_version())
            if tracer_provider is not None
            else None
        )
        self.instruments: Instruments = (
            Instruments.create(meter_provider.get_meter(INSTRUMENTATION_SCOPE, _server_version()))
            if meter_provider is not None
            else NOOP_INSTRUMENTS
        )
        self._open = self.enabled
        if self._open:
            _enable()

    @property
    def enabled(self) -> bool:
        """Whether anything is traced or measured."""
        return self.tracer_provider is not None or self.meter_provider is not None

    @classmethod
    def disabled(cls) -> Telemetry:
        """Telemetry that does nothing and costs nothing."""
        return cls(TelemetrySettings())

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Telemetry:
        """Telemetry as the ``OTEL_*`` variables of ``environ`` (default: the process
        environment) ask for; see :mod:`retouch.server.telemetry._settings` for when
        that is on. Raises :class:`TelemetryError` for settings retouch cannot honour."""
        settings = TelemetrySettings.from_environ(environ)
        if not settings.enabled:
            return cls(settings)
        span_exporters: list[SpanExporter] = []
        for name in settings.traces:
            if name == "otlp" and settings.traces_protocol == "http/protobuf":
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter as HttpSpanExporter,
                )

                span_exporters.append(HttpSpanExporter())
            elif name == "otlp":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                    OTLPSpanExporter,
                )

                span_exporters.append(
                    OTLPSpanExporter(endpoint=settings.traces_endpoint, insecure=settings.insecure)
                )
            else:
                from opentelemetry.sdk.trace.export import ConsoleSpanExporter

                span_exporters.append(ConsoleSpanExporter())
        metric_exporters: list[MetricExporter] = []
        for name in settings.metrics:
            if name == "otlp" and settings.metrics_protocol == "http/protobuf":
                from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                    OTLPMetricExporter as HttpMetricExporter,
                )

                metric_exporters.append(HttpMetricExporter())
            elif name == "otlp":
                from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                    OTLPMetricExporter,
                )

                metric_exporters.append(
                    OTLPMetricExporter(
                        endpoint=settings.metrics_endpoint, insecure=settings.insecure
                    )
                )
            else:
                from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

                metric_exporters.append(ConsoleMetricExporter())
        return cls.create(
            settings=settings,
            span_exporters=span_exporters,
            metric_exporters=metric_exporters,
        )

    @classmethod
    def create(
        cls,
        *,
        settings: TelemetrySettings | None = None,
        span_exporters: Sequence[SpanExporter] = (),
        metric_exporters: Sequence[MetricExporter] = (),
        metric_readers: Sequence[MetricReader] = (),
        resource: Resource | None = None,
    ) -> Telemetry:
        """Telemetry exporting to the given exporters: spans in batches, metrics every
        ``settings.metric_interval_ms`` (``OTEL_METRIC_EXPORT_INTERVAL``, 60 s by default)
        and on :meth:`force_flush`. A signal with no exporter or reader is off."""
        settings = settings or TelemetrySettings(traces=("otlp",), metrics=("otlp",))
        if not span_exporters and not metric_exporters and not metric_readers:
            return cls(settings)
        resource = resource or _resource(settings)
        tracer_provider = None
        if span_exporters:
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            tracer_provider = TracerProvider(resource=resource)
            for exporter in span_exporters:
                tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
        meter_provider = None
        if metric_exporters or metric_readers:
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            readers = [
                PeriodicExportingMetricReader(
                    exporter, export_interval_millis=settings.metric_interval_ms
                )
                for exporter in metric_exporters
            ]
            meter_provider = MeterProvider(
                metric_readers=[*readers, *metric_readers], resource=resource
            )
        return cls(settings, tracer_provider=tracer_provider, meter_provider=meter_provider)

    def server_interceptors(self) -> list[aio.ServerInterceptor]:
        """The interceptors to put first on the server: none while telemetry is off."""
        if not self.enabled:
            return []
        from ._interceptor import TelemetryInterceptor

        return [TelemetryInterceptor(self)]

    def force_flush(self, timeout_millis: int = 10_000) -> bool:
        """Export every finished span and the current metrics now. Blocks: call it from
        a thread (``asyncio.to_thread``) when the collector runs on this event loop."""
        flushed = True
        if self.tracer_provider is not None:
            flushed = self.tracer_provider.force_flush(timeout_millis) and flushed
        if self.meter_provider is not None:
            flushed = self.meter_provider.force_flush(timeout_millis) and flushed
        return flushed

    def shutdown(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> bool:
        """Flush and stop the exporters, waiting at most ``timeout_s``: an unreachable
        collector must not hold up a stopping server (the exporters' own retries run
        for up to a minute). Returns whether everything was flushed in time."""
        if not self._open:
            return True
        self._open = False
        _disable()
        providers = [p for p in (self.tracer_provider, self.meter_provider) if p is not None]

        def stop() -> None:
            for provider in providers:
                provider.shutdown()

        # A daemon thread: what it has not sent by the deadline is given up with it.
        stopping = threading.Thread(target=stop, name="retouch-telemetry-shutdown", daemon=True)
        stopping.start()
        stopping.join(timeout_s)
        if stopping.is_alive():
            log.warning(
                "telemetry: the collector did not take the last spans and metrics within "
                "%.1f s; stopping without them",
                timeout_s,
            )
            return False
        return True


def _resource(settings: TelemetrySettings) -> Resource:
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource

    # The environ retouch was given decides the service name and attributes; the SDK's
    # detectors add the process and SDK attributes around them.
    attributes: dict[str, str] = {
        SERVICE_VERSION: _server_version(),
        **settings.resource_attributes,
        SERVICE_NAME: settings.service_name,
    }
    return Resource.create(attributes)
