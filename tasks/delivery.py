"""The Celery side of a delivery: one message per (event, handler).

The core runs the attempt, records, counts and logs how it ended, and returns a
verdict (``eda.delivery.run_attempt``); this task maps the verdict onto Celery: a
retry is ``Task.retry`` with the countdown the delivery's retry policy computed
(``autoretry_for`` would round the backoff base up to whole seconds), a dead letter
fails the task, everything else ends it.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import Task

from eda import logs
from eda.delivery import Outcome, Verdict, run_attempt
from eda.errors import StoreUnavailable
from tasks import app
from tasks.worker import worker_core

log = logging.getLogger(__name__)


class DeadLettered(Exception):
    """Ends a dead-lettered delivery's task as failed, with the handler's error class and text.

    A dead letter is a failure to whoever watches Celery (Flower's FAILURE state, its
    failure counts and metrics); Celery logs it as expected, without a traceback.
    """


@app.task(
    name="eda.deliver",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,
    ignore_result=True,
    throws=(DeadLettered,),
)
def deliver(
    self: Task,
    event_id: str,
    handler: str,
    replay: bool = False,
    flow: dict[str, Any] | None = None,
    trace: dict[str, str] | None = None,
    event_type: str | None = None,
) -> str:
    """Run one attempt of one delivery.

    ``flow`` is what flow control handed the delivery on an earlier pass (a debounce
    passed, a rate slot reserved); ``trace``, the event's trace context, when it has
    one; ``event_type``, the event's type (whether its routes give the delivery flow
    control; a message without it passes the handler's gate if it has one); ``replay``
    is kept for messages sent before runs.
    """
    core = worker_core()
    task_id, worker = str(self.request.id), self.request.hostname or ""
    with logs.context(
        event_id=event_id, handler=handler, delivery=f"{event_id}:{handler}", task_id=task_id
    ):
        try:
            verdict = run_attempt(core, event_id, handler, task_id, worker, flow, trace, event_type)
        except (StoreUnavailable, redis.RedisError) as exc:
            # The store stayed away past EDA_STORE_WAIT. Retrying through the broker would
            # need the same Redis (and a failed publish drops the message): the delivery is
            # left queued or running, and recovery sends it again once nobody holds it.
            log.warning("event store unreachable, left for recovery: %s", logs.error_summary(exc))
            return "left for recovery"
        # What the message said of its event goes with a retry too (Celery's retry replaces
        # the keywords).
        said = {
            key: value for key, value in (("trace", trace), ("event_type", event_type)) if value
        }
        return _conclude(self, verdict, flow or {}, said)


def _conclude(task: Task, verdict: Verdict, flow: dict[str, Any], said: dict[str, Any]) -> str:
    """Map the core's verdict onto Celery: a retry or a wait, a failure, or done."""
    if verdict.outcome is Outcome.RETRY:
        if verdict.stored:  # the store holds it until due; the relay sends it then
            return "held"
        # A retry passes its gate again, but a debounce it passed stays passed.
        carried = {"flow": {"debounced": True}} if flow.get("debounced") else {}
        raise task.retry(countdown=verdict.delay, kwargs={**said, **carried}, max_retries=None)
    if verdict.outcome is Outcome.WAIT:
        if verdict.parked:  # no message: the delivery that frees a slot sends it again
            return "parked"
        if verdict.stored:
            return "held"
        kwargs = {**said, "flow": verdict.state}
        raise task.retry(countdown=verdict.delay, kwargs=kwargs, max_retries=None)
    if verdict.outcome is Outcome.DEAD:
        raise DeadLettered(verdict.error)
    return str(verdict.outcome)
