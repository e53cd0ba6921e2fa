"""Driving a delivery through its lifecycle's own steps, as dispatch, workers and operators do."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import redis

from eda.core import Core, Enqueuer
from eda.dead_letters import DeadLetter
from eda.delivery import Applied, Change, Deliveries, Status
from eda.event import Event
from eda.flow import FlowRules
from eda.handlers import HandlerRegistry
from eda.settings import Settings
from eda.times import now_iso


def queue(
    steps: Deliveries, event_id: str, handler: str, task: str = "t1", **options: Any
) -> Applied:
    return steps.apply(
        Change(
            event_id,
            handler,
            "dispatch",
            Status.QUEUED,
            "dispatched",
            task_id=task,
            options=options,
        )
    )


def requeue(
    steps: Deliveries,
    event_id: str,
    handler: str,
    task: str,
    reason: str = "replayed",
    **options: Any,
) -> Applied:
    return steps.apply(
        Change(
            event_id,
            handler,
            "requeue",
            Status.QUEUED,
            reason,
            task_id=task,
            options={"new_run": True, **options},
        )
    )


def start(
    steps: Deliveries, event_id: str, handler: str, task: str = "t1", worker: str = "w1"
) -> Applied:
    return steps.apply(
        Change(event_id, handler, "start", Status.RUNNING, task_id=task, options={"worker": worker})
    )


def finish(
    steps: Deliveries,
    event_id: str,
    handler: str,
    status: Status,
    reason: str = "",
    *,
    task: str = "t1",
    attempt: int = 1,
    outcome: dict[str, Any] | None = None,
    letter: DeadLetter | None = None,
) -> Applied:
    return steps.apply(
        Change(
            event_id,
            handler,
            "finish",
            status,
            reason,
            task_id=task,
            options={"attempt": attempt},
            outcome=outcome,
            letter=letter,
        )
    )


def letter_for(event: Event, handler: str, message: str = "bench", task: str = "") -> DeadLetter:
    return DeadLetter(
        event_id=event.id,
        event_type=event.type,
        handler=handler,
        error_class="eda.errors.PermanentError",
        error=message,
        traceback="",
        attempts=1,
        first_failure_at=now_iso(),
        last_failure_at=now_iso(),
        task_id=task,
    )


def kill(
    steps: Deliveries,
    event: Event,
    handler: str,
    message: str = "PermanentError: test",
    task: str = "dead-task",
    **fields: Any,
) -> DeadLetter:
    """Give the event a dead delivery and its dead letter, as a handler failing for good does."""
    requeue(steps, event.id, handler, task, "dispatched")
    attempt = start(steps, event.id, handler, task).extra[1]
    letter = replace(letter_for(event, handler, message, task), **fields)
    finish(
        steps,
        event.id,
        handler,
        Status.DEAD,
        message,
        task=task,
        attempt=int(attempt),
        letter=letter,
    )
    return letter


def governed(
    settings: Settings, client: redis.Redis, enqueuer: Enqueuer | None = None, **rules: FlowRules
) -> Core:
    """A core (without a broker, unless ``enqueuer``) whose handlers, named by the keywords, do
    nothing under these flow rules."""
    registry = HandlerRegistry()
    for name, flow in rules.items():
        registry.register(name, lambda event: None, flow=flow)
    return Core(settings, client, enqueuer, handlers=registry)
