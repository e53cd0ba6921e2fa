"""The Celery side of a delivery: one message per (event, handler).

The core runs the attempt and says how it ended (``eda.delivery.run_attempt``);
this task maps the verdict onto Celery: a retry is ``Task.retry`` with the
countdown the delivery's retry policy computed (``autoretry_for`` would round
the backoff base up to whole seconds), everything else ends the task.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import Task

from eda import logs, metrics, traces
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
) -> str:
    """Run one attempt of one delivery.

    ``flow`` is what flow control handed the delivery on an earlier pass (a debounce
    passed, a rate slot reserved); ``replay`` is kept for messages sent before runs.
    """
    core = worker_core()
    task_id = str(self.request.id)
    with logs.context(
        event_id=event_id, handler=handler, delivery=f"{event_id}:{handler}", task_id=task_id
    ):
        try:
            with traces.delivery(core, event_id, handler, task_id) as span:
                verdict = run_attempt(
                    core, event_id, handler, task_id, self.request.hostname or "", flow
                )
                traces.attempt_ended(span, str(verdict.outcome), verdict.attempt)
        except (StoreUnavailable, redis.RedisError) as exc:
            # The store stayed away past EDA_STORE_WAIT. Retrying through the broker would
            # need the same Redis (and a failed publish drops the message): the delivery is
            # left queued or running, and recovery sends it again once nobody holds it.
            log.warning("event store unreachable, left for recovery: %s", logs.error_summary(exc))
            return "left for recovery"
        return _conclude(self, handler, verdict, flow or {})


#: Verdicts of a delivery that ran no attempt: held by flow control, or not this task's.
NO_ATTEMPT = (Outcome.WAIT, Outcome.NOT_RUN, Outcome.GONE)


def _conclude(task: Task, handler: str, verdict: Verdict, flow: dict[str, Any]) -> str:
    """Map the core's verdict onto Celery: a retry or a wait, a failure, or done."""
    if verdict.outcome not in NO_ATTEMPT:
        final = verdict.outcome is not Outcome.RETRY
        metrics.attempt_ended(handler, str(verdict.outcome), final=final)
    if verdict.outcome is Outcome.RETRY:
        log.info(
            "retrying in %.3f s after attempt %d: %s",
            verdict.delay,
            verdict.attempt,
            verdict.reason,
        )
        # A retry passes its gate again, but a debounce it passed stays passed.
        carried = {"flow": {"debounced": True}} if flow.get("debounced") else {}
        raise task.retry(countdown=verdict.delay, kwargs=carried, max_retries=None)
    if verdict.outcome is Outcome.WAIT:
        if verdict.parked:  # no message: the delivery that frees a slot sends it again
            return "parked"
        raise task.retry(countdown=verdict.delay, kwargs={"flow": verdict.state}, max_retries=None)
    if verdict.outcome is Outcome.SUCCEEDED:
        # A success only at DEBUG: the store keeps it, and a line per success cost a
        # busy worker a tenth of its deliveries a second.
        log.debug("succeeded on attempt %d", verdict.attempt)
    elif verdict.outcome is Outcome.DEAD:
        log.warning("dead-lettered on attempt %d: %s", verdict.attempt, verdict.reason)
        raise DeadLettered(verdict.error)
    elif verdict.outcome is Outcome.STOPPED:
        log.warning("stopped on attempt %d: %s", verdict.attempt, verdict.reason)
    else:
        log.info("%s: %s", verdict.outcome, verdict.reason)
    return str(verdict.outcome)
