"""An OTLP/HTTP receiver on loopback: what the observed rows' processes export their
spans to, so that exporting costs what it would (and what the trace tests read)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class Sink:
    """``with Sink() as sink``: ``sink.url`` takes ``POST /v1/traces``, counted in
    ``sink.exports``; ``keep`` is handed each export's body (protobuf) as it arrives."""

    def __init__(self, keep: Callable[[bytes], None] | None = None) -> None:
        self.exports = 0
        sink = self

        class Export(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if keep is not None:
                    keep(body)
                sink.exports += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Export)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Self:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
