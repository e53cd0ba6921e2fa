"""Prometheus metrics end to end: gunicorn's /metrics and a worker's metrics port.

A known sequence (three GitHub webhooks: one to a handler that always fails, one
to an agent that calls a tool, one to nobody; then the dead letter discarded
through the admin API) through a real gunicorn with two workers, a real Celery
worker and a local Messages API server; both scrapes are parsed with
prometheus_client's parser and hold exactly those counts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import tasks
from eda.core import Core
from eda.event import Event
from eda.redis_server import free_port
from eda.settings import load
from tasks.enqueue import CeleryEnqueuer
from tests.brokers import own_redis
from tests.conftest import RedisServer, settled, wait_for
from tests.messages_api import (
    TEST_API_KEY,
    MessagesAPI,
    message,
    messages_api_server,
    text,
    tool_use,
)
from tests.workers import FAST, ROOT, Worker

__all__ = ["messages_api_server"]  # a fixture used below

pytestmark = pytest.mark.timeout(90)

TOKEN = "metrics-test-admin-token-0123456789"
AGENT = "TestResponder"
FAILING = "tests.handlers:fail"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Deployment:
    """A web (gunicorn, two workers) and a worker with its metrics port, on their own prefix."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.web_port, self.worker_port = free_port(), free_port()
        self.env = {**env, "EDA_WORKER_METRICS_PORT": str(self.worker_port)}
        self.worker = Worker(folder / "worker.log", env=self.env)
        self.web_log = open(folder / "web.log", "wb")  # noqa: SIM115 (closed in stop)
        self.web = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-b",
                f"127.0.0.1:{self.web_port}",
                "-w",
                "2",
                "webhooks.wsgi:app",
            ],
            cwd=ROOT,
            env={**os.environ, **FAST, **self.env, "PYTHONPATH": str(ROOT)},
            stdout=self.web_log,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: self._answers("/healthz"), timeout=30)
        settings = load({**os.environ, **FAST, **self.env})
        self.core = Core(
            settings, enqueuer=CeleryEnqueuer(tasks.app, broker_url=env["CELERY_BROKER_URL"])
        )

    def _answers(self, path: str) -> bool:
        assert self.web.poll() is None, "gunicorn ended: see web.log"
        try:
            return (
                httpx.get(f"http://127.0.0.1:{self.web_port}{path}", timeout=2).status_code == 200
            )
        except httpx.HTTPError:
            return False

    def post(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
        answer = httpx.post(
            f"http://127.0.0.1:{self.web_port}{path}", json=body, headers=headers, timeout=10
        )
        return answer.status_code, answer.json()

    def stop(self) -> None:
        self.web.terminate()
        self.web.wait(timeout=15)
        self.web_log.close()
        self.worker.stop()


def scrape(url: str, token: str | None = TOKEN) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = httpx.get(url, headers=headers, timeout=10)
    return answer.status_code, answer.text


def samples(exposition: str) -> Samples:
    """Every sample of a scrape, parsed by prometheus_client's parser (which must accept it)."""
    found: Samples = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def deployment(
    redis_server: RedisServer,
    messages_api_server: MessagesAPI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    folder = tmp_path_factory.mktemp("metrics")
    with own_redis(tmp_path_factory.mktemp("metrics-broker")) as broker:
        env = {
            "REDIS_URL": redis_server.url,
            "EDA_PREFIX": f"metrics-{uuid.uuid4().hex[:8]}",
            "CELERY_BROKER_URL": f"{broker}/0",
            "EDA_DATA_DIR": str(folder / "data"),
            "EDA_AGENTS": str(ROOT / "tests" / "agents.yaml"),
            "EDA_ADMIN_TOKEN": TOKEN,
            "EDA_ALLOW_UNSIGNED": "1",
            "ANTHROPIC_BASE_URL": messages_api_server.url,
            "ANTHROPIC_API_KEY": TEST_API_KEY,
        }
        started = Deployment(env, folder)
        try:
            yield started
        finally:
            started.stop()


def github(deployment: Deployment, event: str, body: dict[str, Any]) -> str:
    status, answer = deployment.post(
        "/webhooks/github",
        body,
        {"X-GitHub-Event": event, "X-GitHub-Delivery": uuid.uuid4().hex},
    )
    assert status == 202, answer
    return str(answer["event_id"])


def done(core: Core, event_id: str, handler: str) -> dict[str, Any]:
    """The delivery once it succeeded or is dead."""
    return settled(core, event_id, handler, "succeeded", "dead", timeout=30)


def test_a_known_sequence_is_counted_exactly_on_the_web_and_the_worker(
    deployment: Deployment, messages_api_server: MessagesAPI
) -> None:
    core = deployment.core
    core.subscribe(["code.pushed"], FAILING)
    core.subscribe(["issue.opened"], AGENT)
    messages_api_server.script(
        message(tool_use("lookup_service", {"service": "checkout"}), input_tokens=500),
        message(text("team-payments owns checkout."), input_tokens=700),
        match="issue.opened",
    )

    failed = github(deployment, "push", {"ref": "refs/heads/main"})
    handled = github(deployment, "issues", {"action": "opened", "issue": {"number": 1}})
    github(deployment, "issues", {"action": "closed", "issue": {"number": 1}})
    assert done(core, failed, FAILING)["status"] == "dead"
    assert done(core, handled, AGENT)["status"] == "succeeded"
    [letter] = core.dead_letter_list()
    status, _ = deployment.post(
        f"/api/dead-letters/{letter.id}/discard",
        {"reason": "a test"},
        {"Authorization": f"Bearer {TOKEN}"},
    )
    assert status == 200

    web_url = f"http://127.0.0.1:{deployment.web_port}/metrics"
    status, text_web = scrape(web_url)
    assert status == 200, text_web
    web = samples(text_web)
    assert value(web, "eda_webhooks_received_total", source="github", code="202") == 3
    for event_type in ("code.pushed", "issue.opened", "issue.closed"):
        assert value(web, "eda_events_stored_total", type=event_type) == 1
    assert value(web, "eda_dead_letters_total", action="discarded") == 1
    assert value(web, "eda_dead_letters_held") == 0
    assert value(web, "eda_relay_queue_length") == 0
    assert value(web, "eda_store_up") == 1

    status, text_worker = scrape(f"http://127.0.0.1:{deployment.worker_port}/metrics")
    assert status == 200, text_worker
    worker = samples(text_worker)
    assert value(worker, "eda_delivery_attempts_total", handler=FAILING) == 1
    assert value(worker, "eda_deliveries_total", handler=FAILING, status="dead") == 1
    assert value(worker, "eda_deliveries_total", handler=AGENT, status="succeeded") == 1
    assert value(worker, "eda_delivery_retries_total", handler=FAILING) == 0
    assert value(worker, "eda_dead_letters_total", action="added") == 1
    assert value(worker, "eda_delivery_start_latency_seconds_count", handler=AGENT) == 1
    assert value(worker, "eda_agent_runs_total", agent=AGENT, outcome="completed") == 1
    model = "claude-haiku-5-5"
    assert value(worker, "eda_agent_model_requests_total", agent=AGENT, model=model) == 2
    assert (
        value(worker, "eda_agent_tokens_total", agent=AGENT, model=model, kind="input_tokens")
        == 1200
    )
    assert (
        value(worker, "eda_agent_tokens_total", agent=AGENT, model=model, kind="output_tokens")
        == 40
    )
    assert (
        value(
            worker, "eda_agent_tool_calls_total", agent=AGENT, tool="lookup_service", outcome="ok"
        )
        == 1
    )


def test_the_scrapes_are_protected(deployment: Deployment) -> None:
    assert scrape(f"http://127.0.0.1:{deployment.web_port}/metrics", token=None)[0] == 401
    assert scrape(f"http://127.0.0.1:{deployment.web_port}/metrics", token="wrong" * 8)[0] == 401


SUCCEEDING = "tests.handlers:succeed"


def delivered_once(core: Core, port: int, event_type: str) -> tuple[Samples, Samples]:
    """The worker's scrape before and after one event delivered to ``SUCCEEDING``."""
    url = f"http://127.0.0.1:{port}/metrics"
    core.subscribe([event_type], SUCCEEDING)
    status, text_before = scrape(url)
    assert status == 200, text_before
    event = Event.create(type=event_type, source="metrics-test", payload={"n": 1})
    core.publish_event(event)
    assert done(core, event.id, SUCCEEDING)["status"] == "succeeded"
    status, text_after = scrape(url)
    assert status == 200, text_after
    return samples(text_before), samples(text_after)


def counted_once(before: Samples, after: Samples) -> None:
    for name, labels in (
        ("eda_delivery_attempts_total", {"handler": SUCCEEDING}),
        ("eda_deliveries_total", {"handler": SUCCEEDING, "status": "succeeded"}),
        ("eda_delivery_start_latency_seconds_count", {"handler": SUCCEEDING}),
    ):
        assert value(after, name, **labels) - value(before, name, **labels) == 1, name
    assert not any(name.endswith("_created") for name, _ in after)


def test_a_worker_with_the_threads_pool_counts_in_memory_and_writes_no_file(
    deployment: Deployment,
) -> None:
    """The Procfile's worker is one process: its counts need no multiprocess files."""
    before, after = delivered_once(deployment.core, deployment.worker_port, "metrics.threads")
    counted_once(before, after)
    folder = deployment.core.settings.metrics_folder
    assert not list(folder.glob("worker-*")), "a threads-pool worker wrote multiprocess files"


def test_a_worker_with_the_prefork_pool_sums_its_processes_files(
    deployment: Deployment, tmp_path: Path
) -> None:
    """Its pool's processes each count into the worker's folder; the port sums them."""
    broker = deployment.env["CELERY_BROKER_URL"].rsplit("/", 1)[0] + "/1"
    port = free_port()
    env = {
        **deployment.env,
        "EDA_PREFIX": f"metrics-prefork-{uuid.uuid4().hex[:8]}",
        "CELERY_BROKER_URL": broker,
        "EDA_WORKER_METRICS_PORT": str(port),
    }
    worker = Worker(tmp_path / "worker.log", env=env, options=("-P", "prefork", "-c", "2"))
    try:
        settings = load({**os.environ, **FAST, **env})
        core = Core(settings, enqueuer=CeleryEnqueuer(tasks.app, broker_url=broker))
        before, after = delivered_once(core, port, "metrics.prefork")
        counted_once(before, after)
        assert list(settings.metrics_folder.glob("worker-*/counter_*.db"))
    finally:
        worker.stop()
