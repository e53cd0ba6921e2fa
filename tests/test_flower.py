"""Flower, as the Procfile starts it, through its REST API: workers, failures, lanes."""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from eda.redis_server import free_port
from tasks import app
from tasks.enqueue import lane_table
from tests.conftest import wait_for
from tests.test_procfile import ROOT, procfile_line, running
from tests.workers import Worker

LOGIN = "admin:a-flower-password-for-tests"


def get(url: str) -> tuple[int, str]:
    """GET with Flower's login: (status, body text)."""
    request = urllib.request.Request(url)  # noqa: S310 (the loopback URL of our Flower)
    request.add_header("Authorization", "Basic " + base64.b64encode(LOGIN.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()
    except OSError:
        return 0, ""


def test_flower_shows_the_workers_dead_letters_as_failures_and_the_lanes(
    private_broker: Any, unique_type: Any, tmp_path: Path
) -> None:
    broker, core = private_broker(11)
    port = free_port()
    flower = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FLOWER_BASIC_AUTH": LOGIN,
        "CELERY_BROKER_URL": broker,
        "EDA_FLOWER_PORT": str(port),
    }
    # Flower first, the worker after, as under ``eda up``: Flower must still list it.
    with running(procfile_line("flower", env), env, tmp_path / "flower.log") as process:
        worker = Worker(tmp_path / "worker.log", {"CELERY_BROKER_URL": broker}, name="flowered")
        try:

            def answers() -> bool:
                assert process.poll() is None, (tmp_path / "flower.log").read_text()
                return get(f"{flower}/api/workers")[0] == 200

            wait_for(answers, timeout=60, interval=0.2)

            def listed() -> bool:  # as Flower's own inspection at start finishes
                status, body = get(f"{flower}/api/workers")
                return status == 200 and worker.node in json.loads(body)

            wait_for(listed, timeout=10, interval=0.2)

            kind = unique_type()
            core.subscribe([kind], "tests.handlers:fail")
            event_id = core.publish(kind, {}, "test").event_id

            def failed() -> dict[str, Any] | None:
                status, body = get(f"{flower}/api/tasks?state=FAILURE")
                tasks = json.loads(body) if status == 200 else {}
                mine = [t for t in tasks.values() if event_id in str(t.get("args"))]
                return mine[0] if mine else None

            task = wait_for(failed, timeout=30, interval=0.3)
            assert task["state"] == "FAILURE"
            assert "PermanentError" in task["exception"], task["exception"]
            assert "this handler always fails" in task["exception"], task["exception"]

            lanes = set(lane_table(app).names)
            status, body = get(f"{flower}/api/queues/length")
            assert status == 200, body[:500]
            assert {queue["name"] for queue in json.loads(body)["active_queues"]} == lanes
            status, body = get(f"{flower}/broker")
            assert status == 200, body[:500]
            assert all(f">{lane}<" in body or lane in body for lane in lanes)
            assert "redis://" in body
        finally:
            worker.stop()
