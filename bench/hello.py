"""The ingest baselines: a bare Flask endpoint, and one that also stores the body.

gunicorn serves each with the Procfile's web configuration (``bench.hello:app``,
``bench.hello:stored``), so the only difference from the webhook endpoint is the
work the project does. ``stored`` is the least a durable endpoint does: one
Redis write (XADD of the body) before it answers.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify, request

from eda.redis_server import connect
from eda.settings import load

app = Flask(__name__)
stored = Flask(__name__)
_redis = connect(load())


@app.post("/webhooks/<name>")
def receive(name: str) -> tuple[Response, int]:
    """Read the body, as a webhook endpoint must, and answer 202 with a JSON body."""
    request.get_data()
    return jsonify({"event_id": "0" * 32}), 202


@stored.post("/webhooks/<name>")
def receive_and_store(name: str) -> tuple[Response, int]:
    """Read the body, append it to a stream (one round trip), and answer 202."""
    entry = _redis.xadd("bench:stored", {"body": request.get_data()}, maxlen=100_000)
    return jsonify({"event_id": entry}), 202


@app.get("/healthz")
@stored.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})
