"""The app as a whole: real HTTP, concurrency, Redis going away, limits, JSON errors, logs."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask

from eda.core import Core
from eda.redis_server import free_port, start_server, wait_until_ready
from eda.settings import Settings
from tests.http_support import github_signature, http, serve, stored, with_secrets
from webhooks import create_app

SECRET = "app test secret"


def github_app(core: Core) -> Flask:
    """The app around ``core``, with SECRET as GitHub's signing secret."""
    return create_app(core, with_secrets(core.settings, GITHUB_WEBHOOK_SECRET=SECRET))


@pytest.fixture
def signed_github() -> Callable[..., tuple[bytes, dict[str, str]]]:
    def make(payload: Any, delivery: str = "d-1") -> tuple[bytes, dict[str, str]]:
        body = json.dumps(payload).encode()
        return body, {
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": github_signature(SECRET, body),
            "Content-Type": "application/json",
        }

    return make


def test_a_signed_delivery_over_real_http_is_stored(core: Core, signed_github: Any) -> None:
    body, headers = signed_github({"ref": "refs/heads/main"})
    with serve(github_app(core)) as url:
        status, _, answer = http("POST", f"{url}/webhooks/github", body, headers)
    assert status == 202
    assert core.get_event(answer["event_id"]).event.type == "code.pushed"


def test_twenty_parallel_posts_of_one_delivery_make_one_event(
    core: Core, signed_github: Any
) -> None:
    body, headers = signed_github({"ref": "race"}, delivery="the-same-delivery")
    start = threading.Barrier(20)

    def post(url: str) -> tuple[int, dict[str, Any]]:
        start.wait(timeout=10)
        status, _, answer = http("POST", f"{url}/webhooks/github", body, headers)
        return status, answer

    with serve(github_app(core)) as url, ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(post, [url] * 20))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 19 + [202]
    assert len({answer["event_id"] for _, answer in results}) == 1
    assert len(stored(core)) == 1


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    """A Redis server of this test's own, with stop() and start() (the session's is shared)."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    process = [start_server(tmp_path, port)]
    wait_until_ready(url)

    def stop() -> None:
        process[0].terminate()
        process[0].wait(timeout=10)

    def start() -> None:
        process[0] = start_server(tmp_path, port)
        wait_until_ready(url)

    yield url, stop, start
    if process[0].poll() is None:
        stop()


def test_with_redis_down_a_webhook_gets_503_and_nothing_is_half_written(
    make_settings: Callable[..., Settings], private_redis: Any, signed_github: Any
) -> None:
    url, stop, start = private_redis
    core = Core(make_settings(redis_url=url))  # the production client, as the web process has it
    app = github_app(core).test_client()
    first_body, first_headers = signed_github({"ref": "before"}, delivery="before")
    assert app.post("/webhooks/github", data=first_body, headers=first_headers).status_code == 202

    body, headers = signed_github({"ref": "during"}, delivery="during")
    stop()
    refused = app.post("/webhooks/github", data=body, headers=headers)
    assert refused.status_code == 503
    assert refused.headers["Retry-After"].isdigit()
    assert refused.json["error"] == "store_unavailable"
    assert app.get("/readyz").status_code == 503

    start()
    assert [e.event.payload for e in stored(core)] == [{"ref": "before"}]
    accepted = app.post("/webhooks/github", data=body, headers=headers)
    assert accepted.status_code == 202  # not a duplicate: the refused attempt left no dedupe key
    assert [e.event.payload for e in stored(core)] == [{"ref": "before"}, {"ref": "during"}]
    assert app.get("/readyz").status_code == 200


def test_health_and_readiness_answer_json(core: Core) -> None:
    app = github_app(core).test_client()
    assert app.get("/healthz").json == {"status": "ok"}
    ready = app.get("/readyz")
    assert ready.status_code == 200
    assert ready.json["checks"] == {"redis": "ok", "broker": "not configured"}


def test_a_body_over_the_limit_is_refused_with_413(
    make_settings: Callable[..., Settings], client: redis.Redis, signed_github: Any
) -> None:
    core = Core(make_settings(webhook_max_body_bytes=1024), client)
    body, headers = signed_github({"ref": "x" * 2000})
    with serve(github_app(core)) as url:
        status, _, answer = http("POST", f"{url}/webhooks/github", body, headers)
    assert status == 413
    assert answer["error"] == "request_entity_too_large"
    assert stored(core) == []


def test_a_payload_over_the_store_limit_is_refused_with_413(
    make_settings: Callable[..., Settings], client: redis.Redis, signed_github: Any
) -> None:
    core = Core(make_settings(max_payload_bytes=100), client)
    body, headers = signed_github({"ref": "y" * 200})
    response = github_app(core).test_client().post("/webhooks/github", data=body, headers=headers)
    assert response.status_code == 413
    assert "payload" in response.json["message"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", None])
def test_a_wrong_content_type_is_refused_with_415(
    core: Core, signed_github: Any, content_type: str | None
) -> None:
    body, headers = signed_github({"ref": "a"})
    headers.pop("Content-Type")
    if content_type:
        headers["Content-Type"] = content_type
    response = github_app(core).test_client().post("/webhooks/github", data=body, headers=headers)
    assert response.status_code == 415
    assert response.json["error"] == "unsupported_media_type"


def test_malformed_json_is_refused_with_a_reason(core: Core, signed_github: Any) -> None:
    body = b'{"ref": '
    _, headers = signed_github({})
    headers["X-Hub-Signature-256"] = github_signature(SECRET, body)
    response = github_app(core).test_client().post("/webhooks/github", data=body, headers=headers)
    assert response.status_code == 400
    assert "not valid JSON" in response.json["message"]


def test_errors_of_the_http_layer_are_json_too(core: Core) -> None:
    app = github_app(core).test_client()
    missing = app.get("/no/such/page")
    assert (missing.status_code, missing.json["error"]) == (404, "not_found")
    wrong_method = app.get("/webhooks/github")
    assert wrong_method.status_code == 405
    assert wrong_method.is_json
    assert "POST" in wrong_method.headers["Allow"]


def test_secrets_and_signatures_never_reach_the_log(
    core: Core, signed_github: Any, caplog: pytest.LogCaptureFixture
) -> None:
    body, headers = signed_github({"ref": "a"})
    forged = {**headers, "X-Hub-Signature-256": github_signature("forged", body)}
    with caplog.at_level(logging.DEBUG):
        app = github_app(core).test_client()
        assert app.post("/webhooks/github", data=body, headers=forged).status_code == 401
        assert app.post("/webhooks/github", data=body, headers=headers).status_code == 202
    assert caplog.records
    for secret_text in (SECRET, headers["X-Hub-Signature-256"], forged["X-Hub-Signature-256"]):
        assert secret_text not in caplog.text
        assert secret_text.split("=")[-1] not in caplog.text


def test_a_stored_webhook_is_logged_at_debug_and_a_duplicate_at_info(
    core: Core, signed_github: Any, caplog: pytest.LogCaptureFixture
) -> None:
    body, headers = signed_github({"ref": "a"})
    app = github_app(core).test_client()
    with caplog.at_level(logging.DEBUG, logger="webhooks.ingest"):
        first = app.post("/webhooks/github", data=body, headers=headers).json["event_id"]
        app.post("/webhooks/github", data=body, headers=headers)

    lines = [(r.levelno, r.getMessage()) for r in caplog.records if first in r.getMessage()]
    assert [level for level, _ in lines] == [logging.DEBUG, logging.INFO]
    assert "duplicate" in lines[1][1]


def test_the_start_log_says_which_sources_are_unsigned(
    make_settings: Callable[..., Settings], client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    github = {"GITHUB_WEBHOOK_SECRET": SECRET}
    with caplog.at_level(logging.INFO, logger="webhooks.app"):
        create_app(Core(with_secrets(make_settings(), **github), client))
    assert "webhook sources with a secret: github" in caplog.text
    assert "no secret is set for events, slack, stripe" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="webhooks.app"):
        create_app(Core(with_secrets(make_settings(allow_unsigned=True), **github), client))
    warning = next(r for r in caplog.records if "EDA_ALLOW_UNSIGNED" in r.getMessage())
    assert warning.levelno == logging.WARNING
    assert "events, slack, stripe" in warning.getMessage()
    assert SECRET not in caplog.text


def test_the_start_log_lists_the_standard_webhooks_sources_with_a_secret(
    make_settings: Callable[..., Settings], client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "whsec_" + "c2VjcmV0IG9mIHRoZSBhY21lIHNvdXJjZQ=="
    settings = with_secrets(make_settings(), EDA_WEBHOOK_SECRET_ACME=secret)
    with caplog.at_level(logging.INFO, logger="webhooks.app"):
        create_app(Core(settings, client))
    assert "webhook sources with a secret: acme" in caplog.text
    assert secret not in caplog.text


def test_the_app_module_imports_no_celery() -> None:
    import subprocess
    import sys

    code = "import sys, webhooks.app, webhooks.admin; print('celery' in sys.modules)"
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert output.strip() == "False"


def test_a_redis_error_from_the_client_itself_is_a_503(
    make_settings: Callable[..., Settings], signed_github: Any
) -> None:
    # Nothing listens on this port: every path, reads included, answers 503.
    core = Core(make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    app = github_app(core).test_client()
    body, headers = signed_github({"ref": "a"})
    assert app.post("/webhooks/github", data=body, headers=headers).status_code == 503
    assert app.get("/readyz").status_code == 503


def test_gunicorn_serves_the_wsgi_app_with_a_dispatching_core(
    core: Core, prefix: str, signed_github: Any
) -> None:
    import os
    import subprocess
    import sys
    import time

    port = free_port()
    root = Path(__file__).resolve().parent.parent
    environment = {
        **os.environ,
        "EDA_PREFIX": prefix,
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "EDA_ROUTES": str(root / "tests" / "routes.yaml"),  # code.pushed stays unrouted
        "PYTHONPATH": str(root),
    }
    command = [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", "1"]
    server = subprocess.Popen(
        [*command, "--no-control-socket", "webhooks.wsgi:app"],
        env=environment,
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                status, _, ready = http("GET", f"{url}/readyz")
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, (
                    "gunicorn did not start"
                )
                time.sleep(0.1)
        body, headers = signed_github({"ref": "refs/heads/main"})
        accepted, _, answer = http("POST", f"{url}/webhooks/github", body, headers)
    finally:
        server.terminate()
        server.wait(timeout=15)
    assert (status, ready["checks"]) == (200, {"redis": "ok", "broker": "ok"})
    assert accepted == 202
    stored_event = core.get_event(answer["event_id"])
    assert stored_event.event.type == "code.pushed"
    # The request stored the event and handed it to a relay, which dispatches it.
    assert stored_event.status == "pending"
    import tasks
    from eda.relay import Relay

    routed = core.settings.model_copy(update={"routes_path": root / "tests" / "routes.yaml"})
    assert Relay(tasks.connect(routed), wait=0.1).dispatch_batch() == 1
    assert core.get_event(answer["event_id"]).status == "unrouted"  # dispatched, to no handler


def test_a_primary_that_refuses_writes_for_now_is_a_503_not_a_500(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    """min-replicas-to-write with no replica in reach: the sender is told to come back."""
    port = free_port()
    server = start_server(tmp_path, port, options=("--min-replicas-to-write", "1"))
    try:
        url = f"redis://127.0.0.1:{port}/0"
        wait_until_ready(url)
        core = Core(make_settings(redis_url=url, allow_unsigned=True))
        response = create_app(core).test_client().post("/webhooks/acme", json={"type": "ping"})
        assert response.status_code == 503
        assert response.headers["Retry-After"]
        assert "try again later" in response.get_json()["message"]
    finally:
        server.terminate()
        server.wait(timeout=10)
