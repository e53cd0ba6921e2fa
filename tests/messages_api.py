"""A local HTTP server that speaks the Messages API, driven by a script of replies per test.

``POST /v1/messages`` answers with the next scripted reply: a message
(``message(text("..."), tool_use("get_event_history", {...}))``) or an error in the
API's own shape (``{"type": "error", "error": {"type": "rate_limit_error",
"message": ...}}``, with headers such as ``retry-after``). Like the real API it
refuses a request without credentials (``x-api-key`` or ``authorization``: 401),
without ``anthropic-version``, with sampling parameters the API version refuses,
or whose ``tool_use`` blocks are not answered by ``tool_result`` blocks in the
next message (400). Every request is
recorded (credentials masked) with the time it arrived.

A script may ``match`` a text that appears in the request body (an event type of
the test's own), so tests sharing one server, or one Celery worker, never take
each other's replies. The real ``anthropic`` SDK talks to it through
``ANTHROPIC_BASE_URL``.

Fixtures: ``messages_api`` (a server for one test, with ANTHROPIC_BASE_URL and
ANTHROPIC_API_KEY pointed at it) and ``messages_api_server`` (one for the module).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

#: The API key the fixtures give the SDK (the server only checks that one is sent).
TEST_API_KEY = "sk-ant-test-key"
#: Sampling parameters the API version of the SDK refuses.
REFUSED_PARAMETERS = ("temperature", "top_p", "top_k")
#: Error types of the Messages API, by status.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass(frozen=True)
class Reply:
    """One scripted HTTP answer."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds the server waits before answering (a slow model, or time to kill a worker).
    delay: float = 0.0


def text(content: str) -> dict[str, Any]:
    """A text content block."""
    return {"type": "text", "text": content}


def tool_use(name: str, arguments: dict[str, Any], block_id: str | None = None) -> dict[str, Any]:
    """A tool_use content block (a fresh ``toolu_`` id unless given)."""
    return {
        "type": "tool_use",
        "id": block_id or f"toolu_{uuid.uuid4().hex[:20]}",
        "name": name,
        "input": arguments,
    }


def message(
    *content: dict[str, Any],
    stop_reason: str | None = None,
    input_tokens: int = 100,
    output_tokens: int = 20,
    cache_creation_input_tokens: int = 0,
    cache_read_input_tokens: int = 0,
    delay: float = 0.0,
) -> Reply:
    """A 200 reply carrying an assistant message; stop_reason follows the content unless given."""
    if stop_reason is None:
        stop_reason = "tool_use" if any(b["type"] == "tool_use" for b in content) else "end_turn"
    usage = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": cache_creation_input_tokens,
        "cache_read_input_tokens": cache_read_input_tokens,
    }
    body = {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": "",
        "content": list(content),
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }
    return Reply(200, body, delay=delay)


def error(status: int, message_text: str, headers: dict[str, str] | None = None) -> Reply:
    """An error reply in the API's shape, its type from the status."""
    body = {
        "type": "error",
        "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message_text},
        "request_id": f"req_{uuid.uuid4().hex[:24]}",
    }
    return Reply(status, body, dict(headers or {}))


@dataclass
class Received:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]
    body: Any
    at: float


@dataclass
class Script:
    """Replies for the requests whose body contains ``match`` (or any request when None)."""

    replies: deque[Reply]
    match: str | None = None
    requests: list[Received] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return len(self.replies)


class MessagesAPI:
    """The server; ``url`` is what ANTHROPIC_BASE_URL should hold."""

    def __init__(self) -> None:
        self.scripts: list[Script] = []
        self.requests: list[Received] = []
        self.unexpected: list[Received] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def script(self, *replies: Reply, match: str | None = None) -> Script:
        """Queue replies for the requests that contain ``match`` (any request when None)."""
        script = Script(deque(replies), match)
        with self._lock:
            self.scripts.append(script)
        return script

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def answer(self, received: Received, raw: str) -> Reply:
        """The reply to one request: a protocol error, or the next reply of its script."""
        with self._lock:
            self.requests.append(received)
            refusal = _protocol_error(received)
            if refusal is not None:
                self.unexpected.append(received)
                return refusal
            script = next((s for s in self.scripts if s.match and s.match in raw), None)
            script = script or next((s for s in self.scripts if s.match is None), None)
            if script is None or not script.replies:
                self.unexpected.append(received)
                return error(500, "the test's script has no reply left for this request")
            script.requests.append(received)
            reply = script.replies.popleft()
        if reply.status == 200:
            body = {**reply.body, "model": received.body.get("model", "")}
            return Reply(200, body, reply.headers, reply.delay)
        return reply


def _protocol_error(received: Received) -> Reply | None:
    """What the real API would refuse in this request, or None."""
    if not (received.headers.get("x-api-key") or received.headers.get("authorization")):
        return error(401, "x-api-key or authorization header is required")
    if not received.headers.get("anthropic-version"):
        return error(400, "anthropic-version header is required")
    body = received.body
    if not isinstance(body, dict):
        return error(400, "the body must be a JSON object")
    for key in ("model", "max_tokens", "messages"):
        if key not in body:
            return error(400, f"{key}: Field required")
    for key in REFUSED_PARAMETERS:
        if key in body:
            return error(400, f"{key}: Extra inputs are not permitted")
    return _unanswered_tool_use(body["messages"])


def _unanswered_tool_use(messages: list[dict[str, Any]]) -> Reply | None:
    """A 400 when an assistant's tool_use ids are not all answered in the next message."""
    for index, entry in enumerate(messages[:-1]):
        content = entry.get("content")
        if entry.get("role") != "assistant" or not isinstance(content, list):
            continue
        wanted = {b["id"] for b in content if b.get("type") == "tool_use"}
        following = messages[index + 1].get("content")
        answered = (
            {b.get("tool_use_id") for b in following if isinstance(b, dict)}
            if isinstance(following, list)
            else set()
        )
        missing = sorted(wanted - answered)
        if missing:
            return error(
                400,
                f"messages.{index + 1}: tool_use ids were found without "
                f"tool_result blocks immediately after: {missing}",
            )
    return None


def _handler_for(api: MessagesAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length).decode()
            headers = {k.lower(): v for k, v in self.headers.items()}
            for secret in ("x-api-key", "authorization"):
                if secret in headers:
                    headers[secret] = "***"
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw
            received = Received(self.path, headers, body, time.monotonic())
            if self.path.split("?")[0] != "/v1/messages":
                self._send(error(404, f"no route {self.path}"))
                return
            reply = api.answer(received, raw)
            if reply.delay:
                time.sleep(reply.delay)
            self._send(reply)

        def _send(self, reply: Reply) -> None:
            data = json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.send_header("request-id", str(reply.body.get("request_id") or "req_local"))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

    return Handler


@pytest.fixture
def messages_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[MessagesAPI]:
    """A Messages API server for one test; the SDK finds it through the environment."""
    api = MessagesAPI()
    monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", TEST_API_KEY)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    yield api
    api.close()


@pytest.fixture(scope="module")
def messages_api_server() -> Iterator[MessagesAPI]:
    """One server for a module (a Celery worker started with its URL); scripts use ``match``."""
    api = MessagesAPI()
    yield api
    api.close()
