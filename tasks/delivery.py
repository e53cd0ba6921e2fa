"""The Celery side of a delivery: one message per (event, handler), and the outbox sweeper.

The core runs the attempt and says how it ended (``eda.delivery.run_attempt``);
this task maps the verdict onto Celery: a retry is ``Task.retry`` with the
countdown the delivery's retry policy computed (``autoretry_for`` would round
the backoff base up to whole seconds), everything else ends the task.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis
from celery import Task, signals

from eda import flow, logs, metrics, traces
from eda.core import Core
from eda.delivery import Outcome, Verdict, run_attempt
from eda.errors import EdaError, StoreUnavailable
from tasks import app

log = logging.getLogger(__name__)

_core: Core | None = None
_core_lock = threading.Lock()


def worker_core() -> Core:
    """This process's core, built once (routes are checked when it is built)."""
    global _core
    with _core_lock:
        if _core is None:
            from tasks import connect

            _core = connect()
        return _core


@signals.worker_init.connect
def _check_configuration(**_: object) -> None:
    """Load routes, agents and handlers as the worker starts: a mistake stops it, clearly.

    Celery logs and swallows an Exception raised by a signal handler, so a bad
    routes file ends the worker with SystemExit and a one-line reason instead.
    """
    try:
        traces.enable(worker_core().settings)  # only when OTEL_EXPORTER_OTLP_ENDPOINT is set
    except EdaError as exc:
        log.critical("configuration error: %s", exc)
        raise SystemExit(f"eda: configuration error: {exc}") from None


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
        if verdict.stored:  # the store holds it until due; the relay sends it then
            return "held"
        # A retry passes its gate again, but a debounce it passed stays passed.
        carried = {"flow": {"debounced": True}} if flow.get("debounced") else {}
        raise task.retry(countdown=verdict.delay, kwargs=carried, max_retries=None)
    if verdict.outcome is Outcome.WAIT:
        if verdict.parked:  # no message: the delivery that frees a slot sends it again
            return "parked"
        if verdict.stored:
            return "held"
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


@app.task(name="eda.sweep", ignore_result=True)
def sweep() -> int:
    """Dispatch events left pending, then recover deliveries nobody will run."""
    core = worker_core()
    dispatched = core.sweep()
    if dispatched:
        log.info("outbox sweeper dispatched %d pending events", dispatched)
    woken = flow.tick(core)
    if woken:
        log.warning("handed %d expired concurrency slots to waiting deliveries", woken)
    recovered = core.recover()
    if recovered:
        log.warning("recovered %d stuck deliveries", recovered)
    return dispatched + recovered
