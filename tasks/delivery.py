"""The Celery side of a delivery: one message per (event, handler), and the outbox sweeper.

The core runs the attempt and says how it ended (``eda.delivery.run_attempt``);
this task maps the verdict onto Celery: a retry is ``Task.retry`` with the
countdown the delivery's retry policy computed (``autoretry_for`` would round
the backoff base up to whole seconds), everything else ends the task.
"""

from __future__ import annotations

import logging
import threading

import redis
from celery import Task, signals

from eda import logs
from eda.core import Core
from eda.delivery import Outcome, run_attempt
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
        worker_core()
    except EdaError as exc:
        log.critical("configuration error: %s", exc)
        raise SystemExit(f"eda: configuration error: {exc}") from None


@app.task(
    name="eda.deliver",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,
    ignore_result=True,
)
def deliver(self: Task, event_id: str, handler: str, replay: bool = False) -> str:
    """Run one attempt of one delivery; ``replay`` is kept for messages sent before runs."""
    core = worker_core()
    task_id = str(self.request.id)
    with logs.context(
        event_id=event_id, handler=handler, delivery=f"{event_id}:{handler}", task_id=task_id
    ):
        try:
            verdict = run_attempt(core, event_id, handler, task_id, self.request.hostname or "")
        except (StoreUnavailable, redis.RedisError) as exc:
            # Nothing was recorded, so the attempt starts again in place once the store
            # answers, spending none of the handler's retries.
            countdown = core.default_policy.delay(min(self.request.retries, 8))
            log.warning(
                "event store unreachable, again in %.3f s: %s", countdown, logs.describe(exc)
            )
            raise self.retry(countdown=countdown, max_retries=None) from None
        if verdict.outcome is Outcome.RETRY:
            log.info(
                "retrying in %.3f s after attempt %d: %s",
                verdict.delay,
                verdict.attempt,
                verdict.reason,
            )
            raise self.retry(countdown=verdict.delay, max_retries=None)
        if verdict.outcome is Outcome.SUCCEEDED:
            # A success only at DEBUG: the store keeps it, and a line per success cost a
            # busy worker a tenth of its deliveries a second.
            log.debug("succeeded on attempt %d", verdict.attempt)
        elif verdict.outcome is Outcome.DEAD:
            log.warning("dead-lettered on attempt %d: %s", verdict.attempt, verdict.reason)
        elif verdict.outcome is Outcome.STOPPED:
            log.warning("stopped on attempt %d: %s", verdict.attempt, verdict.reason)
        else:
            log.info("%s: %s", verdict.outcome, verdict.reason)
        return str(verdict.outcome)


@app.task(name="eda.sweep", ignore_result=True)
def sweep() -> int:
    """Dispatch events left pending (the broker was down when they were stored)."""
    dispatched = worker_core().sweep()
    if dispatched:
        log.info("outbox sweeper dispatched %d pending events", dispatched)
    return dispatched
