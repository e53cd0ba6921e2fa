"""OpenTelemetry traces: one trace from the webhook that brought an event to its deliveries.

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (the settings' ``otel_endpoint``):
then :func:`enable` builds this process's tracer, exporting over OTLP/HTTP, and
nothing else in the process changes; while it is off every function here returns
at once, and the OpenTelemetry SDK is never imported.

The trace travels on the event, as the CloudEvents distributed-tracing extension
carries it: the W3C ``traceparent`` (and ``tracestate``) among the event's
``attributes``. At ingest, a ``traceparent`` the event already has (a CloudEvent's
extension) or the request's ``traceparent`` header is the parent of an ``eda.ingest``
span, or that span starts a trace; the event is stored with the ingest span's
context, and each delivery attempt is an ``eda.deliver`` span whose parent it is.

Span attributes name things (event id and type, source, handler, outcome, attempt),
never a payload, a header's value or an error's text.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eda.core import Core
    from eda.event import Event
    from eda.settings import Settings

log = logging.getLogger(__name__)

#: A W3C trace context version 00 ``traceparent``: version, trace id, parent id, flags.
TRACEPARENT = re.compile(r"^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")
#: The ``tracestate`` header's most list members, and its longest text.
MAX_TRACESTATE = 512

_lock = threading.Lock()
_tracer: Any = None
_provider: Any = None


def enable(settings: Settings, exporter: Any = None) -> bool:
    """Trace in this process when the settings name an OTLP endpoint (or ``exporter``
    is given: an SDK span exporter, exported to as each span ends). True when on.
    """
    global _tracer, _provider
    if exporter is None and not settings.otel_endpoint:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    with _lock:
        if _provider is not None:
            _provider.shutdown()
        provider = TracerProvider(
            resource=Resource.create({"service.name": settings.otel_service_name})
        )
        if exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        else:
            provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(settings)))
        _provider, _tracer = provider, provider.get_tracer("eda")
    return True


def _otlp_exporter(settings: Settings) -> Any:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    headers = {}
    if settings.otel_headers is not None:
        for item in settings.otel_headers.get_secret_value().split(","):
            name, _, value = item.partition("=")
            if name.strip():
                headers[name.strip()] = value.strip()
    endpoint = f"{str(settings.otel_endpoint).rstrip('/')}/v1/traces"
    return OTLPSpanExporter(endpoint=endpoint, headers=headers)


def disable() -> None:
    """Stop tracing in this process, exporting what is pending."""
    global _tracer, _provider
    with _lock:
        if _provider is not None:
            _provider.shutdown()
        _provider = _tracer = None


def enabled() -> bool:
    return _tracer is not None


def flush() -> None:
    if _provider is not None:
        _provider.force_flush()


def request_context(headers: Any) -> dict[str, str]:
    """The W3C trace context headers of a request (any case-insensitive ``get``)."""
    return {
        name: str(headers.get(name)) for name in ("traceparent", "tracestate") if headers.get(name)
    }


def _carrier(traceparent: object, tracestate: object = None) -> dict[str, str]:
    """A W3C carrier of a valid ``traceparent`` (and its ``tracestate``), else empty."""
    if not isinstance(traceparent, str) or not TRACEPARENT.match(traceparent.strip().lower()):
        return {}
    carrier = {"traceparent": traceparent.strip().lower()}
    if isinstance(tracestate, str) and 0 < len(tracestate) <= MAX_TRACESTATE:
        carrier["tracestate"] = tracestate
    return carrier


def _span(name: str, carrier: Mapping[str, str], kind: str, attributes: dict[str, Any]) -> Any:
    """A span of ``carrier``'s trace (a new trace without one), current while it lasts.

    Neither an exception's text nor its traceback is recorded: they may quote a payload.
    """
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return _tracer.start_as_current_span(
        name,
        context=TraceContextTextMapPropagator().extract(carrier) if carrier else None,
        kind=trace.SpanKind[kind],
        record_exception=False,
        set_status_on_exception=False,
        attributes=attributes,
    )


@contextlib.contextmanager
def ingest(event: Event, headers: Mapping[str, str]) -> Iterator[Event]:
    """Around storing ``event``: the ``eda.ingest`` span, and the event that carries it.

    ``headers`` are the request's trace context (:func:`request_context`). The event's
    own ``traceparent`` wins over the request's (a batch's events each have theirs).
    """
    if _tracer is None:
        yield event
        return
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    attributes = dict(event.attributes or {})
    carrier = _carrier(attributes.get("traceparent"), attributes.get("tracestate")) or _carrier(
        headers.get("traceparent"), headers.get("tracestate")
    )
    named = {"eda.event.id": event.id, "eda.event.type": event.type, "eda.source": event.source}
    with _span("eda.ingest", carrier, "SERVER", named) as span:
        outgoing: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(outgoing)
        attributes.update(outgoing)
        yield event.model_copy(update={"attributes": attributes})
        span.set_status(trace.StatusCode.OK)


@contextlib.contextmanager
def delivery(core: Core, event_id: str, handler: str, task_id: str) -> Iterator[Any]:
    """Around one delivery attempt: the ``eda.deliver`` span, child of its event's trace.

    Yields the span (None while tracing is off); :func:`attempt_ended` records the
    verdict on it.
    """
    if _tracer is None:
        yield None
        return
    try:
        stored = core.get_event(event_id).event.attributes or {}
    except Exception as exc:  # the attempt itself says what is wrong with the event
        log.debug("traces: no trace context for %s: %s", event_id, type(exc).__name__)
        stored = {}
    carrier = _carrier(stored.get("traceparent"), stored.get("tracestate"))
    named = {"eda.event.id": event_id, "eda.handler": handler, "eda.task.id": task_id}
    with _span("eda.deliver", carrier, "CONSUMER", named) as span:
        yield span


def attempt_ended(span: Any, outcome: str, attempt: int) -> None:
    """An attempt's verdict on its span: the outcome, the attempt's number, an error status."""
    if span is None:
        return
    from opentelemetry import trace

    span.set_attribute("eda.delivery.outcome", outcome)
    span.set_attribute("eda.delivery.attempt", attempt)
    failed = outcome in ("retry", "dead", "stopped")
    span.set_status(trace.StatusCode.ERROR if failed else trace.StatusCode.OK)
