"""OpenTelemetry set up from the standard OTEL_* variables; a no-op when no endpoint is set.

The SDK itself reads OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS,
OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME, OTEL_SDK_DISABLED and the rest; this module only
decides whether to install providers and names the service. Trace context crosses Redis Streams
as a W3C ``traceparent`` string (:func:`current_traceparent`, :func:`context_from_traceparent`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger("its.telemetry")
_propagator = TraceContextTextMapPropagator()


@dataclass
class Telemetry:
    enabled: bool
    _shutdowns: list[object] = field(default_factory=list)

    def shutdown(self) -> None:
        for provider in self._shutdowns:
            try:
                provider.shutdown()  # type: ignore[attr-defined]
            except Exception:
                log.exception("telemetry shutdown failed")


def _endpoint_configured() -> bool:
    names = (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    )
    return any(os.environ.get(name) for name in names)


def setup_telemetry(service: str, version: str) -> Telemetry:
    """Install OTLP (HTTP/protobuf) trace and metric exporters when an endpoint is configured."""
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true" or not _endpoint_configured():
        return Telemetry(enabled=False)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {"service.version": version}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = service
    resource = Resource.create(attributes)
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    meter_provider = MeterProvider(
        resource=resource, metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())]
    )
    metrics.set_meter_provider(meter_provider)
    log.info("OpenTelemetry export enabled", extra={"otel_service": service})
    return Telemetry(enabled=True, _shutdowns=[tracer_provider, meter_provider])


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, for a stream entry (None without a span)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def context_from_traceparent(traceparent: str | None) -> otel_context.Context:
    """A context whose parent is the span that wrote the entry (empty context when absent)."""
    if not traceparent:
        return otel_context.Context()
    return _propagator.extract({"traceparent": traceparent})
