"""OpenTelemetry set up from the standard OTEL_* variables; a no-op when no endpoint is set.

The SDK itself reads OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS,
OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME, OTEL_SDK_DISABLED and the rest; this module only
decides whether to install providers and names the service. Trace context crosses Redis Streams
as a W3C ``traceparent`` string (:func:`current_traceparent`, :func:`context_from_traceparent`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
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


def traceparent_of(span: trace.Span) -> str | None:
    """The W3C traceparent of ``span`` for a stream entry; None unless the span is recording.

    Without a configured SDK every span is a non-recording one (possibly carrying the upstream
    context), so nothing is written and no context is forwarded by a service that exports
    nothing.
    """
    if not span.is_recording():
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent")


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, for a stream entry (None without a recording
    span)."""
    return traceparent_of(trace.get_current_span())


def context_from_traceparent(traceparent: str | bytes | None) -> otel_context.Context:
    """A context whose parent is the span that wrote the entry (empty context when absent)."""
    if not traceparent:
        return otel_context.Context()
    if isinstance(traceparent, bytes):
        traceparent = traceparent.decode(errors="replace")
    return _propagator.extract({"traceparent": traceparent})


def parent_and_links(
    traceparents: Iterable[str | bytes | None], max_links: int = 32
) -> tuple[otel_context.Context, list[trace.Link]]:
    """For a span that handles a batch of entries: continue the first entry's trace (parent) and
    link the other distinct traces (at most ``max_links``)."""
    parent: otel_context.Context | None = None
    parent_id: tuple[int, int] | None = None
    links: list[trace.Link] = []
    seen: set[tuple[int, int]] = set()
    for traceparent in traceparents:
        if not traceparent:
            continue
        ctx = context_from_traceparent(traceparent)
        span_context = trace.get_current_span(ctx).get_span_context()
        if not span_context.is_valid:
            continue
        key = (span_context.trace_id, span_context.span_id)
        if parent is None:
            parent, parent_id = ctx, key
            continue
        if key == parent_id or key in seen:
            continue
        seen.add(key)
        links.append(trace.Link(span_context))
        if len(links) >= max_links:
            break
    return (parent if parent is not None else otel_context.Context()), links
