"""The tasks: one delivery (event x handler) per message, and the outbox sweeper.

Retries are Celery's own ``Task.retry`` with a countdown we compute, because
``autoretry_for`` rounds the backoff base up to whole seconds: exponential,
full jitter, capped, and never shorter than a ``retry_after`` the error asked for.
"""

from __future__ import annotations

import logging
import random
import threading
import traceback
from typing import Any

import redis
from celery import Task, signals

from eda import logs
from eda.core import Core
from eda.dead_letters import DeadLetter
from eda.errors import EdaError, NotFound, PermanentError, StoreUnavailable, TransientError
from eda.handlers import Skip
from eda.settings import Settings
from eda.store import now_iso
from tasks import app, registry

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


def backoff(settings: Settings, retries: int, retry_after: float | None = None) -> float:
    """Seconds before the next attempt: full jitter under a capped exponential."""
    ceiling = min(settings.retry_backoff_max, settings.retry_backoff * 2**retries)
    delay = random.uniform(0, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.retry_backoff_max))
    return delay


def is_permanent(core: Core, handler: str, exc: BaseException) -> bool:
    """PermanentError, or an exception class the handler's routes declare permanent."""
    if isinstance(exc, PermanentError):
        return True
    declared = {name for r in core.routes.routes if r.handler == handler for name in r.permanent}
    names = {cls.__name__ for cls in type(exc).__mro__}
    names |= {f"{cls.__module__}.{cls.__name__}" for cls in type(exc).__mro__}
    return bool(declared & names)


def first_failure(delivery: dict[str, Any] | None) -> str:
    """When the current run of failures began (since the delivery was last queued)."""
    first = ""
    for change in (delivery or {}).get("history", []):
        if change["status"] == "queued":
            first = ""
        elif change["status"] in ("retrying", "dead") and not first:
            first = change["at"]
    return first or now_iso()


@app.task(name="eda.deliver", bind=True, acks_late=True, reject_on_worker_lost=True,
          max_retries=None, ignore_result=True)  # fmt: skip
def deliver(self: Task, event_id: str, handler: str, replay: bool = False) -> str:
    """Run one handler on one event, recording every step on the delivery."""
    delivery = f"{event_id}:{handler}"
    with logs.context(event_id=event_id, handler=handler, delivery=delivery,
                      task_id=str(self.request.id)):  # fmt: skip
        try:
            return _deliver(self, event_id, handler, replay)
        except (StoreUnavailable, redis.RedisError) as exc:
            # Nothing could be recorded, so nothing is acknowledged: the whole delivery
            # is tried again once the store answers (a failed task would be acked and lost).
            countdown = backoff(worker_core().settings, min(self.request.retries, 8))
            log.warning("event store unreachable, again in %.3f s: %s", countdown, exc)
            raise self.retry(countdown=countdown, exc=exc, max_retries=None) from None


def _deliver(self: Task, event_id: str, handler: str, replay: bool) -> str:
    core = worker_core()
    attempt = self.request.retries + 1
    try:
        started = core.store.begin(event_id, handler, attempt, str(self.request.id), replay=replay)
    except NotFound:
        log.warning("the event is no longer stored; nothing to deliver")
        return "gone"
    if started is None:
        log.info("not run: the delivery already succeeded, or a newer task now holds it")
        return "not run"
    event, runs = started
    if runs > attempt and runs > core.settings.max_retries + 1:
        # The same message keeps coming back because its worker dies (OOM, a crash).
        lost = PermanentError(f"the worker died {runs - attempt} times running this delivery")
        return _failed(self, core, event_id, event.type, handler, lost)
    try:
        outcome = registry.resolve(handler)(event)
    except SystemExit as exc:  # a handler must not end the worker
        return _failed(self, core, event_id, event.type, handler, PermanentError(f"exit({exc})"))
    except Skip as skip:
        reason = f"{skip.stage}: {skip.reason}" if skip.stage else skip.reason
        core.store.transition(event_id, handler, "skipped", reason, outcome=skip.outcome)
        log.info("skipped: %s", reason)
        return "skipped"
    except Exception as exc:
        return _failed(self, core, event_id, event.type, handler, exc)
    core.store.transition(
        event_id, handler, "succeeded", f"attempt {attempt} succeeded", error=None,
        outcome=outcome if isinstance(outcome, dict) else None,
    )  # fmt: skip
    # Retries, skips and dead letters are logged at INFO and up; a success only at DEBUG:
    # the store keeps it with its history, and a line per success cost a busy worker a
    # tenth of its deliveries a second.
    log.debug("succeeded on attempt %d", attempt)
    return "succeeded"


def _failed(
    task: Task, core: Core, event_id: str, event_type: str, handler: str, exc: Exception
) -> str:
    """Retry a transient failure with backoff; dead-letter a permanent or exhausted one."""
    outcome = getattr(exc, "outcome", None)
    outcome = outcome if isinstance(outcome, dict) else None
    message = f"{type(exc).__name__}: {exc}"
    retries = task.request.retries
    settings = core.settings
    if not is_permanent(core, handler, exc) and retries < settings.max_retries:
        retry_after = exc.retry_after if isinstance(exc, TransientError) else None
        countdown = backoff(settings, retries, retry_after)
        core.store.transition(
            event_id, handler, "retrying", f"{message} (next try in {countdown:.3f} s)",
            error=message[:500], outcome=outcome,
        )  # fmt: skip
        log.info("retrying in %.3f s: %s", countdown, message)
        raise task.retry(countdown=countdown, exc=exc, max_retries=settings.max_retries)
    delivery = core.store.delivery(event_id, handler)
    core.dead_letters.add(
        DeadLetter(
            event_id=event_id,
            event_type=event_type,
            handler=handler,
            error_class=f"{type(exc).__module__}.{type(exc).__qualname__}",
            error=str(exc),
            traceback="".join(traceback.format_exception(exc)),
            attempts=retries + 1,
            first_failure_at=first_failure(delivery),
            last_failure_at=now_iso(),
            task_id=str(task.request.id),
        )
    )
    why = "permanent error" if is_permanent(core, handler, exc) else "retries exhausted"
    core.store.transition(
        event_id, handler, "dead", f"{why}: {message}", error=message[:500], outcome=outcome
    )
    log.warning("dead-lettered after %d attempts: %s", retries + 1, message)
    return "dead"


@app.task(name="eda.sweep", ignore_result=True)
def sweep() -> int:
    """Dispatch events left pending (the broker was down when they were stored)."""
    dispatched = worker_core().sweep()
    if dispatched:
        log.info("outbox sweeper dispatched %d pending events", dispatched)
    return dispatched
