"""Traces from a webhook's ``traceparent`` to the delivery of its event (``eda/traces.py``).

The web runs in this process, tracing into the SDK's in-memory exporter; a real
worker (its own process) exports over OTLP/HTTP to a receiver here, as a deployment
with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set does. The sender's span is the ingest
span's parent, and the ingest span the delivery's, all in the sender's trace; no
attribute holds the payload.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from eda import traces
from eda.core import Core
from tests.conftest import RedisServer, wait_for
from tests.http_support import app_client
from tests.workers import core_with_worker, module_env

pytestmark = pytest.mark.timeout(90)

HANDLER = "tests.handlers:succeed"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SENDER_SPAN = "00f067aa0ba902b7"
#: A payload value that must appear in no span attribute.
SECRET_WORDS = "a-payload-value-no-span-may-hold"


class Receiver:
    """An OTLP/HTTP receiver: every span the worker exports, decoded."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        received = self.spans

        class Export(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        received.extend(scope.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Export)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    started = Receiver()
    yield started
    started.server.shutdown()
    started.server.server_close()


@pytest.fixture(scope="module")
def traced_core(
    redis_server: RedisServer, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Core]:
    folder: Path = tmp_path_factory.mktemp("traces")
    env = module_env(
        "traces",
        redis_server.url,
        10,
        Path(__file__).parent / "routes.yaml",
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

    def delivered() -> Span | None:
        for span in receiver.spans:
            if span.name == "eda.deliver" and any(
                a.key == "eda.event.id" and a.value.string_value == event_id
                for a in span.attributes
            ):
                return span
        return None

    deliver = wait_for(delivered, timeout=30)
    assert deliver.trace_id.hex() == TRACE_ID
    assert deliver.parent_span_id.hex() == ingest_span
    assert deliver.kind == Span.SPAN_KIND_CONSUMER
    attributes = {a.key: a.value for a in deliver.attributes}
    assert attributes["eda.handler"].string_value == HANDLER
    assert attributes["eda.delivery.outcome"].string_value == "succeeded"
    assert attributes["eda.delivery.attempt"].int_value == 1

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


def test_while_tracing_is_off_the_event_is_stored_as_it_came(traced_core: Core) -> None:
    assert not traces.enabled()
    traced_core.subscribe(["code.pushed"], HANDLER)
    event_id = push(traced_core, "refs/heads/off", f"00-{TRACE_ID}-{SENDER_SPAN}-01")
    assert traced_core.get_event(event_id).event.attributes is None
