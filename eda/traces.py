"""OpenTelemetry traces: one trace from the webhook that brought an event to its deliveries,
through the agents that handle it and the events they publish.

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
The relay's batch is an ``eda.relay`` span linked to the trace of each event it
dispatches.

Within a delivery to an agent, each model request is a ``chat {model}`` span and
each tool call an ``execute_tool {tool}`` span, with the OpenTelemetry GenAI
semantic conventions' attributes. A tool's script gets its call's trace context
as ``TRACEPARENT`` (the OpenTelemetry convention for environment variables), and
an event it publishes carries it on: that event's spans continue the same trace.

A span the sampler drops (``OTEL_TRACES_SAMPLER``) still carries its trace on, marked
not sampled, and nothing is made for it beyond that: no link, no attribute set once
it has started.

Span attributes name things (event id and type, source, handler, outcome, attempt,
model, token counts, tool name), never a payload, a prompt, a tool's input or
result, a header's value or an error's text.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
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

#: The GenAI conventions' provider of our model requests.
GENAI_PROVIDER = "anthropic"
#: The environment variables a tool's script gets its call's trace context in.
ENVIRONMENT_CARRIER = {"traceparent": "TRACEPARENT", "tracestate": "TRACESTATE"}

_lock = threading.Lock()
_tracer: Any = None
_provider: Any = None
#: The SDK's pieces every span uses, imported once by :func:`enable`.
_api: Any = None
_context: Any = None
_propagator: Any = None


def enable(settings: Settings, exporter: Any = None) -> bool:
    """Trace in this process when the settings name an OTLP endpoint (or ``exporter``
    is given: an SDK span exporter, exported to as each span ends). True when on.
    """
    global _tracer, _provider, _api, _context, _propagator
    if exporter is None and not settings.otel_endpoint:
        return False
    from opentelemetry import context, trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

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
        _api, _context, _propagator = trace, context, TraceContextTextMapPropagator()
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
    """The W3C trace context headers of a request (any case-insensitive ``get``).

    A ``tracestate`` means nothing without a ``traceparent``: most requests carry
    neither, and pay one header look-up.
    """
    traceparent = headers.get("traceparent")
    if not traceparent:
        return {}
    found = {"traceparent": str(traceparent)}
    tracestate = headers.get("tracestate")
    if tracestate:
        found["tracestate"] = str(tracestate)
    return found


def carrier(traceparent: object, tracestate: object = None) -> dict[str, str]:
    """A W3C carrier of a valid ``traceparent`` (and its ``tracestate``), else empty."""
    if not isinstance(traceparent, str) or not TRACEPARENT.match(traceparent.strip().lower()):
        return {}
    found = {"traceparent": traceparent.strip().lower()}
    if isinstance(tracestate, str) and 0 < len(tracestate) <= MAX_TRACESTATE:
        found["tracestate"] = tracestate
    return found


def of_event(event: Event) -> dict[str, str]:
    """The trace context an event carries (empty for none): what its messages carry on,
    so that a delivery's span needs no read of the event."""
    attributes = event.attributes or {}
    return carrier(attributes.get("traceparent"), attributes.get("tracestate"))


def current() -> dict[str, str]:
    """The current span's W3C carrier (what a published event carries on); empty while off."""
    if _tracer is None:
        return {}
    found: dict[str, str] = {}
    _propagator.inject(found)
    return found


def environment() -> dict[str, str]:
    """The current span's context as a tool script's variables (``TRACEPARENT``), or none."""
    return {ENVIRONMENT_CARRIER[name]: value for name, value in current().items()}


def _remote(parent: Mapping[str, str]) -> Any:
    """The span context of a carrier :func:`carrier` checked, as the propagator's ``extract``
    builds it, without parsing the ``traceparent`` a second time."""
    traceparent, tracestate = parent["traceparent"], parent.get("tracestate")
    return _api.SpanContext(
        trace_id=int(traceparent[3:35], 16),
        span_id=int(traceparent[36:52], 16),
        is_remote=True,
        trace_flags=_api.TraceFlags(int(traceparent[53:55], 16)),
        trace_state=_api.TraceState.from_header([tracestate]) if tracestate else None,
    )


def _parent(parent: Mapping[str, str]) -> Any:
    """The context a span of ``parent``'s trace starts in (as ``extract`` makes it, from an
    empty one); None: the current one."""
    if not parent:
        return None
    return _api.set_span_in_context(_api.NonRecordingSpan(_remote(parent)), _context.Context())


class _Current:
    """A started span, current while the ``with`` lasts and ended with it."""

    __slots__ = ("_token", "span")

    def __init__(self, span: Any) -> None:
        self.span = span
        self._token: object = None

    def __enter__(self) -> Any:
        self._token = _context.attach(_api.set_span_in_context(self.span))
        return self.span

    def __exit__(self, *_: object) -> None:
        _context.detach(self._token)
        self.span.end()


#: What :func:`delivery` is while tracing is off: a ``with`` that yields None.
_OFF = contextlib.nullcontext()


def _span(
    name: str,
    parent: Mapping[str, str],
    kind: str,
    attributes: dict[str, Any],
    links: Sequence[Any] = (),
) -> _Current:
    """A span of ``parent``'s trace (the current span's without one), started now, current
    while the ``with`` it is given to lasts.

    What the SDK's ``start_as_current_span`` does, less its two generator context
    managers (its own and its ``use_span``'s): every delivery, sampled or not, pays for
    what is around its span. Neither an exception's text nor its traceback is recorded:
    they may quote a payload.
    """
    return _Current(
        _tracer.start_span(
            name,
            context=_parent(parent),
            kind=_api.SpanKind[kind],
            attributes=attributes,
            links=links,
            record_exception=False,
            set_status_on_exception=False,
        )
    )


@contextlib.contextmanager
def ingest(event: Event, headers: Mapping[str, str], kind: str = "SERVER") -> Iterator[Event]:
    """Around storing ``event``: the ``eda.ingest`` span, and the event that carries it.

    ``headers`` are the request's trace context (:func:`request_context`). The event's
    own ``traceparent`` wins over the request's (a batch's events each have theirs);
    without either the span is the current span's child, or starts a trace. ``kind``:
    ``SERVER`` for a request, ``PRODUCER`` for an event a handler publishes.

    Every webhook pays for this span, so it costs no more than the SDK asks: it is
    never the current span (storing makes no span under it), and a stored event
    leaves its status unset, as the OpenTelemetry conventions ask of success; an
    event not stored marks it failed, by the error's class alone.
    """
    if _tracer is None:
        yield event
        return
    attributes = dict(event.attributes or {})
    parent = carrier(attributes.get("traceparent"), attributes.get("tracestate")) or carrier(
        headers.get("traceparent"), headers.get("tracestate")
    )
    named = {"eda.event.id": event.id, "eda.event.type": event.type, "eda.source": event.source}
    span = _tracer.start_span(
        "eda.ingest",
        context=_parent(parent),
        kind=_api.SpanKind[kind],
        attributes=named,
        record_exception=False,
        set_status_on_exception=False,
    )
    try:
        _carry(span.get_span_context(), attributes)
        yield event.model_copy(update={"attributes": attributes})
    except BaseException as exc:
        _failed(span, exc)
        raise
    finally:
        span.end()


def _carry(context: Any, carried: dict[str, Any]) -> None:
    """Write a span context into ``carried`` as W3C trace context, as the propagator's
    ``inject`` writes it, without the context object that ``inject`` takes and searches."""
    if not context.is_valid:
        return
    carried["traceparent"] = (
        f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    )
    if context.trace_state:
        carried["tracestate"] = context.trace_state.to_header()


def _failed(span: Any, exc: BaseException) -> None:
    """An exception's mark on its span: its class, never its text (it may quote a payload)."""
    span.set_attribute("error.type", type(exc).__name__)
    span.set_status(_api.StatusCode.ERROR)


def delivery(
    core: Core, event_id: str, handler: str, task_id: str, sent: Mapping[str, str] | None = None
) -> contextlib.AbstractContextManager[Any]:
    """Around one delivery attempt (started now, for a ``with``): the ``eda.deliver`` span,
    child of its event's trace.

    ``sent`` is the trace context the message carried (:func:`of_event`); without it
    (a message sent before messages carried it, a retry) the event is read for it.
    Yields the span (None while tracing is off); :func:`attempt_ended` records the
    verdict on it. No generator: the ``with`` around every delivery costs what it must.
    """
    if _tracer is None:
        return _OFF
    context: Mapping[str, object] = {} if sent is None else sent
    if sent is None:
        try:
            context = core.get_event(event_id).event.attributes or {}
        except Exception as exc:  # the attempt itself says what is wrong with the event
            log.debug("traces: no trace context for %s: %s", event_id, type(exc).__name__)
    parent = carrier(context.get("traceparent"), context.get("tracestate"))
    named = {"eda.event.id": event_id, "eda.handler": handler, "eda.task.id": task_id}
    return _span("eda.deliver", parent, "CONSUMER", named)


def attempt_ended(span: Any, outcome: str, attempt: int) -> None:
    """An attempt's verdict on its span: the outcome, the attempt's number, an error status.

    A success leaves the status unset, as the OpenTelemetry conventions ask (as the
    ingest span does); an attempt that failed marks it ``ERROR``. A span the sampler
    dropped records nothing, and nothing is made for it.
    """
    if span is None or not span.is_recording():
        return
    span.set_attributes({"eda.delivery.outcome": outcome, "eda.delivery.attempt": attempt})
    if outcome in ("retry", "dead", "stopped"):
        span.set_status(_api.StatusCode.ERROR)


@contextlib.contextmanager
def _operation(name: str, kind: str, attributes: dict[str, Any]) -> Iterator[Any]:
    """A child span of the current one; an exception marks it failed, by its class alone."""
    if _tracer is None:
        yield None
        return
    with _span(name, {}, kind, attributes) as span:
        try:
            yield span
        except BaseException as exc:
            _failed(span, exc)
            raise


def model_turn(model: str, max_tokens: int) -> contextlib.AbstractContextManager[Any]:
    """Around one Messages API request: the ``chat {model}`` span (None while off).

    :func:`turn_answered` records the reply on it.
    """
    return _operation(
        f"chat {model}",
        "CLIENT",
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": GENAI_PROVIDER,
            "gen_ai.system": GENAI_PROVIDER,
            "gen_ai.request.model": model,
            "gen_ai.request.max_tokens": max_tokens,
        },
    )


def turn_answered(
    span: Any, response_id: str, model: str, stop_reason: str, usage: Mapping[str, int]
) -> None:
    """A reply's id, model, stop reason and token counts on its ``chat`` span.

    The input tokens include the cached ones, as the conventions ask (the Messages API
    counts those apart).
    """
    if span is None or not span.is_recording():
        return
    cache_read = int(usage.get("cache_read_input_tokens") or 0)
    cache_creation = int(usage.get("cache_creation_input_tokens") or 0)
    span.set_attributes(
        {
            "gen_ai.response.id": response_id,
            "gen_ai.response.model": model,
            "gen_ai.response.finish_reasons": [stop_reason],
            "gen_ai.usage.input_tokens": int(usage.get("input_tokens") or 0)
            + cache_read
            + cache_creation,
            "gen_ai.usage.output_tokens": int(usage.get("output_tokens") or 0),
            "gen_ai.usage.cache_read.input_tokens": cache_read,
            "gen_ai.usage.cache_creation.input_tokens": cache_creation,
        }
    )


def tool_call(name: str, call_id: str) -> contextlib.AbstractContextManager[Any]:
    """Around one tool call: the ``execute_tool {name}`` span (None while off).

    :func:`tool_ended` records its outcome; neither its input nor its result is kept.
    """
    attributes = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": name,
        "gen_ai.tool.call.id": call_id,
    }
    return _operation(f"execute_tool {name}", "INTERNAL", attributes)


def tool_ended(span: Any, outcome: str) -> None:
    """A tool call's outcome (``ok``, ``error``, ``refused``) on its span.

    ``ok`` leaves the status unset, as for every span here; another outcome marks it
    ``ERROR``, with the outcome as its ``error.type``.
    """
    if span is None or not span.is_recording():
        return
    span.set_attribute("eda.tool.outcome", outcome)
    if outcome != "ok":
        span.set_attribute("error.type", outcome)
        span.set_status(_api.StatusCode.ERROR)


@contextlib.contextmanager
def relay_batch(events: Sequence[Event]) -> Iterator[None]:
    """Around dispatching one relay batch: an ``eda.relay`` span linked to each event's trace.

    One span a batch, not one an event: the relay's cost stays a batch's. Its links are
    made when first read (:class:`_Links`): a sampler that keeps one trace in ten drops
    nine batches in ten, and their links would be made for nothing.
    """
    if _tracer is None:
        yield
        return
    named = {"eda.relay.events": len(events)}
    with _span("eda.relay", {}, "PRODUCER", named, _Links(events)):
        yield


class _Links(Sequence[Any]):
    """A relay batch's links to its events' traces, made when first read: by the SDK once
    the span records, or by a sampler that looks at them. The SDK's samplers do not, and
    a span one drops never reads them (a parse of every event's ``traceparent``, a span
    context and a link each)."""

    def __init__(self, events: Sequence[Event]) -> None:
        self._events = events
        self._made: list[Any] | None = None

    def _links(self) -> list[Any]:
        if self._made is None:
            self._made = []
            for event in self._events:
                stored = event.attributes or {}
                parent = carrier(stored.get("traceparent"), stored.get("tracestate"))
                if parent:
                    self._made.append(_api.Link(_remote(parent), {"eda.event.id": event.id}))
        return self._made

    def __bool__(self) -> bool:  # what the SDK asks first, of every span: not a reading
        return bool(self._events)

    def __len__(self) -> int:
        return len(self._links())

    def __getitem__(self, index: Any) -> Any:
        return self._links()[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._links())
