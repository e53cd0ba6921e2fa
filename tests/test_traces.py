"""Traces from a webhook's ``traceparent`` to the delivery of its event (``eda/traces.py``),
through an agent's model turns and tool calls to the delivery of the event it published.

The web runs in this process, tracing into the SDK's in-memory exporter; a real
worker (its own process) exports over OTLP/HTTP to a receiver here, as a deployment
with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set does, and its agents talk to the module's
Messages API server. The sender's span is the ingest span's parent, and the ingest
span the delivery's, all in the sender's trace; no attribute holds the payload.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from bench.otlp_sink import Sink
from eda import traces
from eda.core import Core
from eda.errors import StoreUnavailable
from eda.event import Event
from tests.conftest import RedisServer, wait_for
from tests.http_support import app_client
from tests.messages_api import MessagesAPI, message, messages_api_server, text, tool_use
from tests.workers import ROOT, core_with_worker, module_env

__all__ = ["messages_api_server"]  # a fixture used below

pytestmark = pytest.mark.timeout(90)

HANDLER = "tests.handlers:succeed"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SENDER_SPAN = "00f067aa0ba902b7"
#: A payload value that must appear in no span attribute.
SECRET_WORDS = "a-payload-value-no-span-may-hold"


class Receiver(Sink):
    """An OTLP/HTTP receiver: every span the worker exports, decoded."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        super().__init__(self._keep)

    def _keep(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                self.spans.extend(scope.spans)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as started:
        yield started


@pytest.fixture(scope="module")
def traced_core(
    redis_server: RedisServer,
    receiver: Receiver,
    messages_api_server: MessagesAPI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Core]:
    folder: Path = tmp_path_factory.mktemp("traces")
    env = module_env(
        "traces",
        redis_server.url,
        10,
        Path(__file__).parent / "routes.yaml",
        messages_api_server.url,
        EDA_AGENTS=str(ROOT / "tests" / "agents.yaml"),
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_SERVICE_NAME="eda-worker",
        OTEL_BSP_SCHEDULE_DELAY="50",
        EDA_ALLOW_UNSIGNED="1",
    )
    with core_with_worker(env, folder) as core:
        yield core


@pytest.fixture
def memory(traced_core: Core) -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process (the web's side), into the SDK's in-memory exporter."""
    exporter = InMemorySpanExporter()
    assert traces.enable(traced_core.settings, exporter=exporter)
    traced_core.subscribe(["code.pushed"], HANDLER)
    yield exporter
    traces.disable()


def push(core: Core, ref: str, traceparent: str, **payload: Any) -> str:
    """A GitHub push to the in-process web, with this ``traceparent``: the event's id."""
    response = app_client(core).post(
        "/webhooks/github",
        json={"ref": ref, **payload},
        headers={
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": uuid.uuid4().hex,
            "traceparent": traceparent,
        },
    )
    assert response.status_code == 202, response.json
    return str(response.json["event_id"])


def post_cloudevent(core: Core, cloudevent: dict[str, Any], traceparent: str) -> str:
    """A CloudEvent posted to the in-process web with this ``traceparent``: its event's id."""
    response = app_client(core).post(
        "/events",
        data=json.dumps(cloudevent),
        content_type="application/cloudevents+json",
        headers={"traceparent": traceparent},
    )
    assert response.status_code == 202, response.json
    return str(response.json["event_id"])


def status(core: Core, event_id: str, handler: str) -> str | None:
    """The status of the event's delivery to ``handler`` (None before it is dispatched)."""
    return core.get_event(event_id).deliveries.get(handler, {}).get("status")


def values(span: Span) -> dict[str, Any]:
    """A received span's attributes as Python values (a list for an array)."""
    found: dict[str, Any] = {}
    for attribute in span.attributes:
        kind = attribute.value.WhichOneof("value")
        if kind == "array_value":
            found[attribute.key] = [v.string_value for v in attribute.value.array_value.values]
        else:
            found[attribute.key] = getattr(attribute.value, str(kind))
    return found


def exported(receiver: Receiver, name: str, event_id: str, handler: str = "") -> Span | None:
    """The worker's ``name`` span of this event (and handler), once it is exported."""
    wanted = {"eda.event.id": event_id, **({"eda.handler": handler} if handler else {})}
    for span in list(receiver.spans):
        named = values(span)
        if span.name == name and all(named.get(k) == v for k, v in wanted.items()):
            return span
    return None


def test_a_webhooks_trace_reaches_its_delivery_with_the_parent_links_intact(
    traced_core: Core, receiver: Receiver, memory: InMemorySpanExporter
) -> None:
    core = traced_core
    sender = f"00-{TRACE_ID}-{SENDER_SPAN}-01"
    event_id = push(core, "refs/heads/main", sender, head_commit={"message": SECRET_WORDS})

    [ingest] = memory.get_finished_spans()
    assert ingest.name == "eda.ingest"
    assert format(ingest.context.trace_id, "032x") == TRACE_ID
    assert ingest.parent is not None and format(ingest.parent.span_id, "016x") == SENDER_SPAN
    assert ingest.attributes is not None and ingest.attributes["eda.event.id"] == event_id
    stored = core.get_event(event_id).event.attributes or {}
    ingest_span = format(ingest.context.span_id, "016x")
    assert stored["traceparent"] == f"00-{TRACE_ID}-{ingest_span}-01"

    deliver = wait_for(lambda: exported(receiver, "eda.deliver", event_id), timeout=30)
    assert deliver.trace_id.hex() == TRACE_ID
    assert deliver.parent_span_id.hex() == ingest_span
    assert deliver.kind == Span.SPAN_KIND_CONSUMER
    attributes = {a.key: a.value for a in deliver.attributes}
    assert attributes["eda.handler"].string_value == HANDLER
    assert attributes["eda.delivery.outcome"].string_value == "succeeded"
    assert attributes["eda.delivery.attempt"].int_value == 1
    assert deliver.status.code == deliver.status.STATUS_CODE_UNSET  # success: left unset

    # No payload in any attribute, on either side.
    values = [str(v) for v in (ingest.attributes or {}).values()]
    values += [str(a.value) for a in deliver.attributes]
    assert values and not any(SECRET_WORDS in v or "refs/heads" in v for v in values)


def test_without_a_traceparent_ingest_starts_the_trace(
    traced_core: Core, receiver: Receiver, memory: InMemorySpanExporter
) -> None:
    core = traced_core
    event_id = push(core, "refs/heads/started", "00-not-a-trace-context-01")
    [ingest] = memory.get_finished_spans()
    assert ingest.parent is None
    stored = core.get_event(event_id).event.attributes or {}
    assert stored["traceparent"].split("-")[1] == format(ingest.context.trace_id, "032x")


def test_a_stored_events_ingest_span_is_left_unset_and_one_not_stored_is_failed_by_class(
    traced_core: Core, memory: InMemorySpanExporter
) -> None:
    push(traced_core, "refs/heads/stored", f"00-{TRACE_ID}-{SENDER_SPAN}-01")
    [stored] = memory.get_finished_spans()
    assert stored.status.status_code is StatusCode.UNSET
    assert "error.type" not in (stored.attributes or {})

    memory.clear()
    event = Event.create(type="code.pushed", source="github", payload={"ref": SECRET_WORDS})
    with pytest.raises(StoreUnavailable), traces.ingest(event, {}):
        raise StoreUnavailable(f"the store refused {SECRET_WORDS}")
    [failed] = memory.get_finished_spans()
    assert failed.name == "eda.ingest" and failed.status.status_code is StatusCode.ERROR
    assert (failed.attributes or {})["error.type"] == "StoreUnavailable"
    assert not failed.status.description and not failed.events  # no error text anywhere
    assert not [v for v in (failed.attributes or {}).values() if SECRET_WORDS in str(v)]


@pytest.mark.parametrize("outcome", ["error", "refused"])
def test_a_tool_call_that_failed_or_was_refused_marks_its_span_by_outcome(
    traced_core: Core, memory: InMemorySpanExporter, outcome: str
) -> None:
    with traces.tool_call("publish_event", "toolu_1") as span:
        traces.tool_ended(span, outcome)
    with traces.tool_call("publish_event", "toolu_2") as span:
        traces.tool_ended(span, "ok")
    failed, done = memory.get_finished_spans()
    assert failed.status.status_code is StatusCode.ERROR and not failed.status.description
    assert (failed.attributes or {})["error.type"] == outcome
    assert done.status.status_code is StatusCode.UNSET
    assert "error.type" not in (done.attributes or {})


ATTEMPT_STATUS = [
    ("succeeded", "UNSET"),
    ("skipped", "UNSET"),
    ("retry", "ERROR"),
    ("dead", "ERROR"),
]


@pytest.mark.parametrize(("outcome", "code"), ATTEMPT_STATUS)
def test_an_attempts_span_is_failed_only_by_an_attempt_that_failed(
    traced_core: Core, memory: InMemorySpanExporter, outcome: str, code: str
) -> None:
    sent = {"traceparent": f"00-{TRACE_ID}-{SENDER_SPAN}-01"}
    with traces.delivery(traced_core, "evt_1", HANDLER, "task-1", sent) as span:
        traces.attempt_ended(span, outcome, 1)
    [ended] = memory.get_finished_spans()
    assert ended.status.status_code is StatusCode[code]


def test_a_delivery_and_a_relay_batch_take_their_parent_as_the_sdks_propagator_reads_it(
    traced_core: Core, memory: InMemorySpanExporter
) -> None:
    """The spans read a carrier's ``traceparent`` themselves, not through the propagator:
    the parent they get must be the one the propagator's ``extract`` gives."""
    from opentelemetry.trace import get_current_span
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    sent = {"traceparent": f"00-{TRACE_ID}-{SENDER_SPAN}-01", "tracestate": "vendor=a1,other=b2"}
    expected = get_current_span(TraceContextTextMapPropagator().extract(sent)).get_span_context()
    event = Event.create(type="code.pushed", source="test", payload={}, attributes=sent)
    with traces.relay_batch([event]), traces.delivery(traced_core, event.id, HANDLER, "t", sent):
        pass
    deliver, relay = memory.get_finished_spans()
    assert deliver.parent == expected and deliver.context.trace_id == expected.trace_id
    assert deliver.context.trace_state == expected.trace_state
    assert relay.parent is None and [link.context for link in relay.links] == [expected]


def test_the_sdks_sampler_variables_choose_which_webhooks_are_traced(
    traced_core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing kept: the event still carries a trace context, marked not sampled, so
    # the deliveries down the chain (parent-based) keep none either.
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    exporter = InMemorySpanExporter()
    assert traces.enable(traced_core.settings, exporter=exporter)
    try:
        traced_core.subscribe(["code.pushed"], HANDLER)
        event_id = push(traced_core, "refs/heads/unsampled", "")
        assert exporter.get_finished_spans() == ()
        stored = traced_core.get_event(event_id).event.attributes or {}
        assert int(stored["traceparent"].rsplit("-", 1)[1], 16) & 1 == 0  # not sampled
        # A sender's sampled trace is kept whatever the ratio: the parent decides.
        push(traced_core, "refs/heads/sampled", f"00-{TRACE_ID}-{SENDER_SPAN}-01")
        [kept] = exporter.get_finished_spans()
        assert format(kept.context.trace_id, "032x") == TRACE_ID
    finally:
        traces.disable()


def test_while_tracing_is_off_the_event_is_stored_as_it_came(traced_core: Core) -> None:
    assert not traces.enabled()
    traced_core.subscribe(["code.pushed"], HANDLER)
    event_id = push(traced_core, "refs/heads/off", f"00-{TRACE_ID}-{SENDER_SPAN}-01")
    assert traced_core.get_event(event_id).event.attributes is None


#: The agent of tests/agents.yaml that may call publish_event for ``*.followup`` types.
AGENT = "DurableResponder"
#: Its model, as the Messages API server echoes it.
MODEL = "claude-haiku-5-5"
#: A payload value of the event the agent publishes: no span may hold it either.
PUBLISHED_WORDS = "a-published-value-no-span-may-hold"


def children(receiver: Receiver, parent: Span, name: str) -> list[Span]:
    """The received ``name`` spans whose parent is ``parent``, in the order they started."""
    found = [
        s for s in list(receiver.spans) if s.name == name and s.parent_span_id == parent.span_id
    ]
    return sorted(found, key=lambda span: span.start_time_unix_nano)


def test_an_agents_model_turns_tool_call_and_published_event_continue_the_webhooks_trace(
    traced_core: Core,
    receiver: Receiver,
    memory: InMemorySpanExporter,
    messages_api_server: MessagesAPI,
) -> None:
    core = traced_core
    tag = f"t{uuid.uuid4().hex[:10]}"
    happened, followup = f"{tag}.happened", f"{tag}.followup"
    core.subscribe([happened], AGENT)
    core.subscribe([followup], HANDLER)
    call_id = f"toolu_{uuid.uuid4().hex[:20]}"
    published_payload = json.dumps({"note": PUBLISHED_WORDS})
    messages_api_server.script(
        message(
            tool_use(
                "publish_event", {"event_type": followup, "payload": published_payload}, call_id
            ),
            input_tokens=300,
            output_tokens=40,
            cache_read_input_tokens=7,
        ),
        message(text("Published the follow-up."), input_tokens=400, output_tokens=10),
        match=happened,
    )
    cloudevent = {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": "monitoring",
        "type": happened,
        "data": {"note": SECRET_WORDS},
    }
    event_id = post_cloudevent(core, cloudevent, f"00-{TRACE_ID}-{SENDER_SPAN}-01")
    [ingest] = memory.get_finished_spans()
    assert ingest.parent is not None and format(ingest.parent.span_id, "016x") == SENDER_SPAN

    deliver = wait_for(lambda: exported(receiver, "eda.deliver", event_id, AGENT), timeout=60)
    assert deliver.parent_span_id.hex() == format(ingest.context.span_id, "016x")
    assert values(deliver)["eda.delivery.outcome"] == "succeeded"

    # Each model request is a span of the delivery, with the GenAI conventions' attributes.
    first, second = children(receiver, deliver, f"chat {MODEL}")
    assert first.kind == Span.SPAN_KIND_CLIENT
    turn = values(first)
    assert turn["gen_ai.operation.name"] == "chat"
    assert turn["gen_ai.provider.name"] == turn["gen_ai.system"] == "anthropic"
    assert turn["gen_ai.request.model"] == turn["gen_ai.response.model"] == MODEL
    assert turn["gen_ai.response.id"].startswith("msg_")
    assert turn["gen_ai.usage.input_tokens"] == 307  # the cached tokens are input too
    assert turn["gen_ai.usage.output_tokens"] == 40
    assert turn["gen_ai.response.finish_reasons"] == ["tool_use"]
    assert values(second)["gen_ai.response.finish_reasons"] == ["end_turn"]
    assert values(second)["gen_ai.usage.input_tokens"] == 400

    # The tool call is a span of the delivery too, named by the tool and its call's id.
    [tool] = children(receiver, deliver, "execute_tool publish_event")
    assert tool.kind == Span.SPAN_KIND_INTERNAL
    called = values(tool)
    assert called["gen_ai.operation.name"] == "execute_tool"
    assert called["gen_ai.tool.name"] == "publish_event"
    assert called["gen_ai.tool.call.id"] == call_id
    assert called["eda.tool.outcome"] == "ok"
    assert tool.status.code == deliver.status.code == tool.status.STATUS_CODE_UNSET
    assert "error.type" not in called
    assert first.end_time_unix_nano <= tool.start_time_unix_nano <= second.start_time_unix_nano

    # The event the agent published is stored under the tool call, and delivered under that.
    [stored] = children(receiver, tool, "eda.ingest")
    assert stored.kind == Span.SPAN_KIND_PRODUCER
    published_id = values(stored)["eda.event.id"]
    assert values(stored)["eda.event.type"] == followup
    assert core.get_event(published_id).event.causation_id == event_id
    followed = wait_for(lambda: exported(receiver, "eda.deliver", published_id, HANDLER))
    assert followed.parent_span_id == stored.span_id
    assert values(followed)["eda.delivery.outcome"] == "succeeded"

    # The relay that dispatched it links its batch to the event's trace.
    def relayed() -> Span | None:
        batches = [span for span in list(receiver.spans) if span.name == "eda.relay"]
        return next((b for b in batches if any(k.span_id == stored.span_id for k in b.links)), None)

    relay = wait_for(relayed)
    [link] = [link for link in relay.links if link.span_id == stored.span_id]
    assert link.trace_id.hex() == TRACE_ID

    # One trace from the sender to the published event's delivery; no payload, no prompt.
    spans = [deliver, first, second, tool, stored, followed]
    assert {span.trace_id.hex() for span in spans} == {format(ingest.context.trace_id, "032x")}
    assert format(ingest.context.trace_id, "032x") == TRACE_ID
    held = [str(v) for v in (ingest.attributes or {}).values()]
    held += [str(value) for span in [*spans, relay] for value in values(span).values()]
    instructions = "Publish a follow-up event"
    assert not [v for v in held if SECRET_WORDS in v or PUBLISHED_WORDS in v or instructions in v]


def test_while_tracing_is_off_no_span_is_made_and_no_tracing_module_is_imported() -> None:
    # redis-py imports parts of OpenTelemetry itself when it is installed: what counts is
    # that our calls add none (the SDK's tracer, the W3C propagator).
    code = (
        "import sys\n"
        "from eda import traces\n"
        "before = {m for m in sys.modules if m.startswith('opentelemetry')}\n"
        "with traces.model_turn('m', 1) as turn, traces.tool_call('t', 'id') as call:\n"
        "    assert turn is None and call is None\n"
        "    traces.turn_answered(turn, 'msg', 'm', 'end_turn', {})\n"
        "    traces.tool_ended(call, 'ok')\n"
        "with traces.relay_batch([]):\n"
        "    pass\n"
        "assert traces.environment() == {} and traces.current() == {}\n"
        "after = {m for m in sys.modules if m.startswith('opentelemetry')}\n"
        "assert after == before, sorted(after - before)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_an_unsampled_agents_delivery_records_nothing_and_carries_its_trace_on(
    traced_core: Core,
    receiver: Receiver,
    memory: InMemorySpanExporter,
    messages_api_server: MessagesAPI,
) -> None:
    """A sender that did not sample its trace: the worker's default sampler (the parent's
    choice) keeps no span of it, yet the event the agent publishes is of the same trace,
    still marked not sampled, under the tool call's span (a span of its own)."""
    core = traced_core
    tag = f"t{uuid.uuid4().hex[:10]}"
    happened, followup = f"{tag}.happened", f"{tag}.followup"
    core.subscribe([happened], AGENT)
    core.subscribe([followup], HANDLER)
    unsampled = uuid.uuid4().hex
    messages_api_server.script(
        message(tool_use("publish_event", {"event_type": followup, "payload": "{}"}, "toolu_1")),
        message(text("Published the follow-up.")),
        match=happened,
    )
    cloudevent = {"specversion": "1.0", "id": uuid.uuid4().hex, "source": "s", "type": happened}
    event_id = post_cloudevent(core, cloudevent, f"00-{unsampled}-{SENDER_SPAN}-00")
    assert memory.get_finished_spans() == ()  # the ingest span recorded nothing
    stored = core.get_event(event_id).event.attributes or {}
    _, trace_id, ingest_span, flags = stored["traceparent"].split("-")
    assert (trace_id, flags) == (unsampled, "00") and ingest_span != SENDER_SPAN

    def published() -> Event | None:
        found = core.history(followup)
        return found[0].event if found else None

    event = wait_for(published, timeout=60)
    assert event.causation_id == event_id
    _, trace_id, tool_span, flags = (event.attributes or {})["traceparent"].split("-")
    assert (trace_id, flags) == (unsampled, "00")
    assert tool_span not in (SENDER_SPAN, ingest_span)  # the tool call's span, not recorded
    wait_for(lambda: status(core, event.id, HANDLER) == "succeeded")
    wait_for(lambda: status(core, event_id, AGENT) == "succeeded")

    # A sampled delivery after them is exported: what the worker kept before it has been too.
    barrier = push(core, "refs/heads/barrier", f"00-{TRACE_ID}-{SENDER_SPAN}-01")
    wait_for(lambda: exported(receiver, "eda.deliver", barrier, HANDLER))
    assert not [s for s in list(receiver.spans) if s.trace_id.hex() == unsampled]
    assert not [s for s in list(receiver.spans) if values(s).get("eda.event.id") == event_id]


class Walked(list[Event]):
    """A relay batch that says whether anything walked its events."""

    walked = False

    def __iter__(self) -> Iterator[Event]:
        self.walked = True
        return super().__iter__()


@pytest.mark.parametrize(("ratio", "recorded"), [("0", False), ("1", True)])
def test_a_relay_batch_makes_its_links_only_for_a_span_that_records(
    traced_core: Core, monkeypatch: pytest.MonkeyPatch, ratio: str, recorded: bool
) -> None:
    """A batch's span that the sampler drops records no link: its events' trace contexts
    are not even read. One it keeps links every event's trace, as before."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", ratio)
    exporter = InMemorySpanExporter()
    assert traces.enable(traced_core.settings, exporter=exporter)
    sent = {"traceparent": f"00-{TRACE_ID}-{SENDER_SPAN}-01"}
    batch = Walked(
        Event.create(type="code.pushed", source="test", payload={}, attributes=sent)
        for _ in range(3)
    )
    try:
        with traces.relay_batch(batch):
            pass
    finally:
        traces.disable()
    assert batch.walked is recorded
    linked = [
        [(link.attributes or {})["eda.event.id"] for link in span.links]
        for span in exporter.get_finished_spans()
    ]
    assert linked == ([[event.id for event in batch]] if recorded else [])
