"""Flower, as the Procfile starts it, through its REST API: workers, failures, lanes."""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

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


def task_of(flower: str, state: str, event_id: str) -> dict[str, Any] | None:
    """The task Flower lists in ``state`` for a delivery of ``event_id``, if it lists one."""
    status, body = get(f"{flower}/api/tasks?state={state}")
    tasks = json.loads(body) if status == 200 else {}
    mine = [task for task in tasks.values() if event_id in str(task.get("args"))]
    return mine[0] if mine else None


def failed_events(metrics: str, worker: str) -> float | None:
    """``flower_events_total`` of a worker's ``task-failed`` events of ``eda.deliver``."""
    wanted = {"worker": worker, "type": "task-failed", "task": "eda.deliver"}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "flower_events_total" and sample.labels == wanted:
                return sample.value
    return None


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

            task = wait_for(lambda: task_of(flower, "FAILURE", event_id), timeout=30, interval=0.3)
            assert task["state"] == "FAILURE"
            assert "PermanentError" in task["exception"], task["exception"]
            assert "this handler always fails" in task["exception"], task["exception"]

            # Alerts built on Flower's metrics see the dead letter as one failed task.
            def failures_counted() -> float | None:
                status, body = get(f"{flower}/metrics")
                return failed_events(body, worker.node) if status == 200 else None

            assert wait_for(failures_counted, timeout=30, interval=0.3) == 1

            # A skipped delivery is no failure: its task succeeds, and no failure is counted.
            skipped_kind = unique_type("skipped")
            core.subscribe([skipped_kind], "tests.handlers:skips")
            skipped_id = core.publish(skipped_kind, {}, "test").event_id

            skip = wait_for(
                lambda: task_of(flower, "SUCCESS", skipped_id), timeout=30, interval=0.3
            )
            assert skip["state"] == "SUCCESS"
            assert core.get_event(skipped_id).deliveries["tests.handlers:skips"]["status"] == (
                "skipped"
            )
            assert failed_events(get(f"{flower}/metrics")[1], worker.node) == 1

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
