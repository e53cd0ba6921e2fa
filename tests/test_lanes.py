"""Lanes: every event type travels in exactly one queue, and a worker sees only its lanes."""

from __future__ import annotations

import ast
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.app.defaults import DEFAULTS

from eda.errors import InvalidInput
from eda.lanes import LaneTable
from tasks import app
from tasks.enqueue import lane_table
from tests.brokers import Broker
from tests.conftest import wait_for
from tests.handlers import attempts
from tests.lanes import lane_messages
from tests.workers import ROOT, Worker

pytestmark = pytest.mark.brokers


def test_every_type_lands_in_exactly_one_lane() -> None:
    table = lane_table(app)
    assert table.resolve("alert.triggered") == "alerts"
    assert table.resolve("alert.cpu.high") == "alerts"
    assert table.resolve("code.pr_opened") == "code"
    assert table.resolve("customer.signup") == "customers"
    assert table.resolve("payment.failed") == "payments"
    assert table.resolve("alerts.triggered") == "default"
    assert table.resolve("stripe.charge_refunded") == "default"
    for event_type in ["alert.x", "code.y", "customer.z", "payment.w", "slack.message"]:
        assert sum(lane.matches(event_type) for lane in table.lanes) <= 1


@pytest.mark.parametrize(
    ("lanes", "message"),
    [
        ({"a": ["alert.*"], "b": ["alert.cpu.*"]}, "'alert.cpu.*' overlaps 'alert.*' of lane 'a'"),
        ({"a": ["alert.x"], "b": ["alert.*"]}, "'alert.*' overlaps 'alert.x' of lane 'a'"),
        ({"a": ["alert"]}, "'alert' is neither an event type nor a prefix"),
        ({"a": ["al*rt.x"]}, "neither an event type nor a prefix"),
    ],
)
def test_an_overlapping_or_malformed_lane_table_is_refused(
    lanes: dict[str, list[str]], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message.replace("*", r"\*")):
        LaneTable(lanes, "default")


def test_lane_patterns_become_amqp_bindings() -> None:
    table = LaneTable({"alerts": ["alert.*", "pager.page"]}, "default")
    assert table.lanes[0].bindings() == ["alert.#", "pager.page"]


def test_the_celery_queues_are_the_lanes_bound_to_the_events_topic_exchange() -> None:
    queues = {q.name: q for q in app.conf.task_queues}
    assert set(queues) == set(lane_table(app).names)
    alerts = next(iter(queues["alerts"].bindings))
    assert (alerts.exchange.name, alerts.exchange.type) == ("events", "topic")
    assert alerts.routing_key == "alert.#"


#: Files that start workers: none of them may name the lanes celeryconfig.py declares.
WORKER_STARTERS = ("tests/workers.py", "scripts/up.py", "bench/services.py", "bench/procfile.py")


def lane_lists(text: str) -> list[str]:
    """Strings in Python source that are lane names or comma-separated lists of them."""
    lanes = set(lane_table(app).names)
    return [
        node.value
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value
        and set(node.value.split(",")) <= lanes
    ]


def test_the_procfile_and_the_test_workers_take_their_lanes_from_celeryconfig() -> None:
    worker_line = next(
        line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("worker:")
    )
    words = worker_line.split()
    assert "-Q" not in words and not any(w.startswith("--queues") for w in words), worker_line
    for name in WORKER_STARTERS:
        assert lane_lists((ROOT / name).read_text()) == [], name


def test_a_worker_without_q_consumes_exactly_the_declared_lanes(worker: Worker) -> None:
    replies = app.control.inspect([worker.node], timeout=5.0).active_queues() or {}
    consumed = {queue["name"] for queue in replies[worker.node]}
    assert app.conf.task_create_missing_queues is False
    assert consumed == {queue.name for queue in app.conf.task_queues}
    assert consumed == set(lane_table(app).names)


def test_the_worker_shows_each_lanes_own_routing_keys(worker: Worker) -> None:
    replies = app.control.inspect([worker.node], timeout=5.0).active_queues() or {}
    shown = {queue["name"]: queue for queue in replies[worker.node]}
    for lane in lane_table(app).lanes:
        keys = {shown[lane.name]["routing_key"]}
        keys |= {binding["routing_key"] for binding in shown[lane.name]["bindings"]}
        assert keys == set(lane.bindings()), lane.name
    banner = worker.log()
    assert "key=alert.#" in banner and "key=payment.#" in banner


def test_inspect_conf_lists_settings_only(worker: Worker) -> None:
    replies = app.control.inspect([worker.node], timeout=5.0).conf(with_defaults=False) or {}
    listed = set(replies[worker.node])
    assert not listed & {"Exchange", "Queue", "binding", "LaneTable", "load", "redis_url"}
    # Celery's own settings (and its record of deprecated ones), and the project's lanes.
    own = {"eda_lanes", "eda_default_lane", "deprecated_settings"}
    assert listed - set(DEFAULTS) <= own, listed - set(DEFAULTS)


def test_a_worker_on_one_lane_never_runs_another_lanes_delivery(
    private_broker: Any, broker_under_test: Broker, client: Any, unique_type: Any, tmp_path: Path
) -> None:
    broker, core = private_broker(3)
    lane_worker = Worker(tmp_path / "alerts.log", {"CELERY_BROKER_URL": broker}, queues="alerts")
    try:
        alert, code = unique_type("ev", lane="alert"), unique_type("ev", lane="code")
        core.subscribe([alert, code], "tests.handlers:succeed")
        alert_id = core.publish(alert, {}, "test").event_id
        code_id = core.publish(code, {}, "test").event_id

        wait_for(lambda: core.get_event(alert_id).status == "succeeded")
        time.sleep(0.5)

        assert core.get_event(code_id).status == "queued"
        assert attempts(client, code_id, "succeed") == []
        assert broker_under_test.waiting(broker, "code") == 1
        assert broker_under_test.waiting(broker, "alerts") == 0
        if broker_under_test.name == "redis":  # the message as kombu's Redis transport keeps it
            (message,) = lane_messages(redis.Redis.from_url(broker), "code")
            delivery_info = message["properties"]["delivery_info"]
            assert delivery_info == {"exchange": "events", "routing_key": code}
            assert message["headers"]["task"] == "eda.deliver"
            assert message["headers"]["argsrepr"] == repr((code_id, "tests.handlers:succeed"))
    finally:
        lane_worker.stop()


def test_a_worker_with_a_bad_routes_file_refuses_to_start_and_says_where(
    tmp_path: Path,
) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes:\n  - events: alert.triggered\n    handler: NoSuchAgent\n")
    with pytest.raises(RuntimeError) as failure:
        Worker(tmp_path / "bad.log", {"EDA_ROUTES": str(routes)})
    where = f"{routes}:3: routes[0] (NoSuchAgent).handler"
    assert f"{where}: unknown handler 'NoSuchAgent'" in str(failure.value)


def test_a_visibility_timeout_shorter_than_a_task_and_its_backoff_stops_start_up() -> None:
    import subprocess
    import sys

    from tests.workers import ROOT

    result = subprocess.run(
        [sys.executable, "-c", "import celeryconfig"],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "REDIS_URL": "redis://127.0.0.1:1/0",
            "EDA_VISIBILITY_TIMEOUT": "100",
            "EDA_TASK_TIME_LIMIT": "90",
            "EDA_RETRY_BACKOFF_MAX": "60",
        },
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert (
        "EDA_VISIBILITY_TIMEOUT: is 100 s but must exceed the task time limit plus the "
        "longest backoff (90 + 60 s)"
    ) in result.stderr


def test_a_lane_is_a_durable_queue_bound_to_the_events_exchange_by_its_patterns(
    broker_under_test: Broker, idle_broker: str
) -> None:
    """What a worker declares at start routes a bare message by its type, on any broker."""
    with app.connection_for_write(idle_broker) as connection:
        channel = connection.default_channel
        for queue in app.conf.task_queues:
            declared = queue.bind(channel)
            declared.declare()
            assert declared.durable and declared.queue_arguments == {"x-max-priority": 9}
        producer = connection.Producer(exchange=app.conf.task_queues[0].exchange)
        for routing_key in ["alert.cpu.high", "alert.triggered", "code.pr_opened"]:
            producer.publish({}, routing_key=routing_key, serializer="json")
    wait_for(lambda: broker_under_test.waiting(idle_broker, "alerts") == 2)
    assert broker_under_test.waiting(idle_broker, "code") == 1
    assert broker_under_test.waiting(idle_broker, "payments") == 0
    assert app.connection_for_write().transport.driver_type == (
        "amqp" if broker_under_test.name == "rabbitmq" else "redis"
    )
