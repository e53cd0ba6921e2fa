"""tasks: workers log what needs an eye (retries, dead letters), in the project's format."""

from __future__ import annotations

from typing import Any

from eda.core import Core
from tests.conftest import settled
from tests.workers import Worker, run_python

PROGRAM = """
import logging
import tasks
tasks._configure_logging()
print(logging.getLogger().level, *(logging.getLogger(n).level for n in tasks.PER_TASK_LOGGERS))
"""


def run(level: str) -> list[int]:
    done = run_python(PROGRAM, timeout=30, EDA_LOG_LEVEL=level)
    return [int(x) for x in done.stdout.split()]


def test_celery_per_task_lines_are_quiet_but_its_warnings_show() -> None:
    root, *per_task = run("INFO")
    assert root == 20 and per_task == [30, 30]
    root, *per_task = run("ERROR")
    assert root == 40 and per_task == [40, 40]


def test_a_worker_logs_a_retry_at_info_but_not_each_success(
    live: Core, worker: Worker, unique_type: Any
) -> None:
    kind = unique_type()
    live.subscribe([kind], "tests.handlers:flaky")
    event_id = live.publish(kind, {"fail_times": 1}, "test").event_id

    settled(live, event_id, "tests.handlers:flaky", "succeeded")

    lines = [line for line in worker.log().splitlines() if event_id in line]
    assert any("retrying in" in line for line in lines)
    assert not any("succeeded on attempt" in line for line in lines)


def test_a_retry_line_never_carries_the_payload(
    live: Core, worker: Worker, unique_type: Any
) -> None:
    kind = unique_type()
    handler = "tests.handlers:fails_naming_the_event"
    live.subscribe([kind], handler)
    event_id = live.publish(kind, {"card": "payload-marker-51c2"}, "test").event_id

    settled(live, event_id, handler, "succeeded")

    lines = [line for line in worker.log().splitlines() if event_id in line]
    assert any("retrying in" in line and "could not handle Event(" in line for line in lines)
    assert "payload-marker-51c2" not in worker.log()
