"""The ingest baseline: a bare Flask endpoint that reads the body and answers JSON.

gunicorn serves it with the Procfile's web configuration (``bench.hello:app``),
so the only difference from the webhook endpoint is the work the project does.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify, request

app = Flask(__name__)


@app.post("/webhooks/<name>")
def receive(name: str) -> tuple[Response, int]:
    """Read the body, as a webhook endpoint must, and answer 202 with a JSON body."""
    request.get_data()
    return jsonify({"event_id": "0" * 32}), 202


@app.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})
