"""A Messages API stand-in that answers every request after a fixed delay.

It stands for a model that takes ``delay`` seconds per call, so that agent
deliveries are I/O-bound as they are in production: the ideal throughput of a
worker running ``c`` deliveries at once is ``c / delay``. It runs in a process of
its own, as the real API is elsewhere: the suite's own work never delays it.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import socket
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from eda.redis_server import free_port

_MODEL = re.compile(rb'"model":\s*"([^"]*)"')


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Many agents connect at once; the default backlog of 5 would drop connections.
    request_queue_size = 1024


class MessagesAPI:
    """The server process, on loopback; ``url`` is what ANTHROPIC_BASE_URL should hold."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        context = multiprocessing.get_context("spawn")
        self._calls = context.Value("q", 0)
        self._process = context.Process(
            target=serve, args=(self.port, delay, self._calls), daemon=True
        )

    @property
    def calls(self) -> int:
        """Requests answered so far."""
        return int(self._calls.value)

    def __enter__(self) -> MessagesAPI:
        self._process.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the Messages API stand-in did not start")

    def __exit__(self, *exc: object) -> None:
        self._process.terminate()
        self._process.join(timeout=10)


#: Tool calls the stand-in asks for in a conversation that offers tools, before it answers.
TOOL_CALLS = 2
#: The tool call it asks for: one of the project's own tools, reading one event.
TOOL_USE = {"name": "get_event_history", "input": {"event_type": "bench.agent_tools", "limit": 1}}


def reply(model: str, tool_call: bool = False) -> dict[str, Any]:
    """An assistant turn, as the API sends it: a tool call, or a finished answer."""
    content: dict[str, Any] = {"type": "text", "text": "Acknowledged."}
    if tool_call:
        content = {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:20]}", **TOOL_USE}
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [content],
        "stop_reason": "tool_use" if tool_call else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 50, "output_tokens": 3},
    }


def serve(port: int, delay: float, calls: Any) -> None:
    """Answer ``POST /v1/messages`` after ``delay`` seconds, counting the answers, forever."""
    _Server(("127.0.0.1", port), _handler_for(delay, calls)).serve_forever()


def _handler_for(delay: float, calls: Any) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body leave in one segment, at once: written separately, Nagle's
        # algorithm would hold the body until the client's delayed ACK (40 ms here).
        disable_nagle_algorithm = True
        wbufsize = -1

        def do_POST(self) -> None:
            # As little work as a server can do: 64 requests arrive at once, and the time
            # spent parsing them here would count against the worker being measured.
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            time.sleep(delay)
            with calls.get_lock():
                calls.value += 1
            found = _MODEL.search(body)
            tool_call = b'"tools"' in body and body.count(b'"tool_result"') < TOOL_CALLS
            data = json.dumps(reply(found.group(1).decode() if found else "", tool_call)).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
