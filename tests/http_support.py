"""What the HTTP tests share: a real server in a thread, plain HTTP calls, signers.

The signers that are not in a provider's own library live here: GitHub has no
Python reference library, so its signature is computed as GitHub documents it
(checked against GitHub's published test vector in test_webhooks_github.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from standardwebhooks import Webhook
from werkzeug.serving import make_server

from eda.core import Core
from eda.settings import Settings, load
from eda.store import StoredEvent
from webhooks import create_app

#: A Standard Webhooks secret (whsec_ + base64) for the tests' own sources.
STANDARD_SECRET = "whsec_" + base64.b64encode(b"a test key of thirty-two bytes!!").decode()


#: The settings fields that hold secrets, read from their own variables by ``load``.
SECRET_FIELDS = {
    "webhook_secrets",
    "events_tokens",
    "destination_secrets",
    "admin_token",
    "mcp_token",
    "otel_headers",
}


def with_secrets(settings: Settings, **variables: str) -> Settings:
    """``settings`` with the secrets these variables hold, read as ``load`` reads them."""
    return load(variables, **settings.model_dump(exclude=SECRET_FIELDS))


def app_client(core: Core, **variables: str) -> FlaskClient:
    """A test client of the app around ``core``, given settings with these secret variables."""
    return create_app(core, with_secrets(core.settings, **variables)).test_client()


@contextmanager
def serve(app: Flask) -> Iterator[str]:
    """Serve ``app`` on a free loopback port in a thread; yield its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


def http(
    method: str,
    url: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, dict[str, str], Any]:
    """One real HTTP request: (status, headers, JSON body)."""
    # Only ever the loopback URL of a server the test started.
    request = urllib.request.Request(url, data=body or None, headers=headers or {}, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), json.loads(error.read())


def github_signature(secret: str, body: bytes) -> str:
    """``X-Hub-Signature-256`` as GitHub documents it."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def standard_headers(
    body: bytes,
    secret: str = STANDARD_SECRET,
    message_id: str = "msg_1",
    when: datetime | None = None,
) -> dict[str, str]:
    """Standard Webhooks headers signed by the reference library."""
    moment = when or datetime.now(UTC)
    signature = Webhook(secret).sign(message_id, moment, body.decode())
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signature,
        "Content-Type": "application/json",
    }


def stored(core: Core) -> list[StoredEvent]:
    """Every event stored under the core's prefix, oldest first."""
    return core.history(limit=10_000, newest_first=False)


def one_byte_altered(body: bytes) -> bytes:
    """The body with one letter changed: still valid JSON, no longer what was signed."""
    index = body.index(b"a")
    return body[:index] + b"b" + body[index + 1 :]
