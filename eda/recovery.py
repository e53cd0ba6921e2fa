"""Recovery of stuck deliveries: no message behind them, or held by a process that is gone.

Every delivery that is queued, running or retrying is in the in-flight index
(``P:inflight``, kept by the delivery step itself). A recovery pass (beat's
sweep, every ``EDA_SWEEP_INTERVAL`` s) looks at those whose last step is older
than ``EDA_RECOVERY_GRACE`` and re-enqueues, under a new task id, each whose
task no live worker holds (heartbeats: ``eda/liveness.py``) and, when it waits
for a worker, whose message is not waiting in its lane either. The old message,
should it ever come back (the broker restores unacknowledged messages after its
visibility timeout), is refused as superseded, so recovery never runs a
delivery twice: it only ends the wait for one nobody will run.

A delivery parked for a concurrency slot has no message, and is flow control's
to wake (``eda/flow.py``) while it is on its scope's parked list. One that is
parked on its record but no longer on the list was handed a slot: its message
was sent then, and if it is in no lane either, that send failed, and it is
recovered like any other. A send that failed with an answer from the broker is
recorded (queued, never sent); one that died with its process is known on
RabbitMQ, which cannot list its lanes, when the slot's lease (``EDA_FLOW_LEASE``)
runs out before the delivery started.

When the broker cannot say which messages wait (RabbitMQ keeps unacknowledged
messages itself and redelivers them), only deliveries held by a gone worker, or
whose message was never sent, are recovered.

A retry (or a flow-control wait) longer than ``EDA_RETRY_HOLD_MAX`` has no
message either: the store holds it in the due set (``P:due``) and
:func:`send_held` (the relay's, every half second) sends it again under a new
task id once it is due. Recovery leaves it alone until the grace period past
that time, and then takes it as stuck.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from eda import logs
from eda.delivery import Change, Delivery, Status, held_until, inflight_member
from eda.errors import EdaError, NotFound, reaching_redis

if TYPE_CHECKING:
    from eda.core import Core

log = logging.getLogger(__name__)

#: Most in-flight deliveries one pass looks at.
BATCH = 500


@dataclass(frozen=True)
class Stuck:
    """A delivery nobody will run unless it is sent again, and why."""

    event_id: str
    handler: str
    status: Status
    task_id: str
    why: str
    #: The record's last step when it was found stuck: recovery takes it only if unchanged.
    updated_at: str = ""
    #: What its next pass is given (flow control's state), as its record keeps it.
    carry: dict[str, Any] = field(default_factory=dict)


def send_held(core: Core, now: float | None = None) -> int:
    """Send again, under new task ids, the held deliveries that are due; how many went out.

    Each is moved to ``queued`` first (only while it still waits under its old task
    id, so that two relays never both send it), flagged unsent until the broker took
    its message, its flow-control state kept; one the broker refused is held again,
    due a second later (and should that fail too, it is recovery's).
    """
    now_ms = int((time.time() if now is None else now) * 1000)
    with reaching_redis():
        members = core.redis.zrangebyscore(core.keys.due, "-inf", now_ms, start=0, num=BATCH)
    if not members:
        return 0
    pairs = [(str(m).split(" ", 1)[0], str(m).split(" ", 1)[1]) for m in members]
    records = core.deliveries.get_many(pairs)
    events = {s.event.id: s.event for s in core.store.get_many({e for e, _ in pairs})}
    enqueuer = core._enqueuer()
    sent: list[tuple[str, str, str]] = []
    for (event_id, handler), record in zip(pairs, records, strict=True):
        event = events.get(event_id)
        if record is None or event is None:  # retention took it
            with reaching_redis():
                core.redis.zrem(core.keys.due, inflight_member(event_id, handler))
            continue
        if not record.due or record.due > now_ms:
            # Another relay sent it since the due set was read, and it may already wait
            # again, held anew: its own step keeps the due set, this pass leaves it.
            continue
        task_id = uuid.uuid4().hex
        options = {"expect_task": record.task_id, "enqueue_failed": True, "carry": record.carry}
        try:
            applied = core.deliveries.apply(
                Change(
                    event_id,
                    handler,
                    "send_held",
                    Status.QUEUED,
                    "due: sent again",
                    task_id=task_id,
                    options=options,
                )
            )
        except NotFound:  # retention took the event meanwhile
            with reaching_redis():
                core.redis.zrem(core.keys.due, inflight_member(event_id, handler))
            continue
        if not applied.ok:
            continue  # another relay sent it, or an operator moved it on
        try:
            enqueuer.deliver(event, handler, task_id, flow=record.carry or None)
        except Exception as exc:
            why = f"due: not sent ({logs.error_summary(exc)}), held again"
            log.warning(why, extra={"event_id": event_id, "handler": handler})
            core.deliveries.apply(
                Change(
                    event_id,
                    handler,
                    "revert",
                    record.status,
                    why,
                    task_id=task_id,
                    options=held_until(1.0, record.carry),
                )
            )
            continue
        sent.append((event_id, handler, task_id))
    core.store.mark_dispatched_many([], sent=sent)
    return len(sent)


def stuck(core: Core, waiting: set[str] | None, now: float | None = None) -> list[Stuck]:
    """The in-flight deliveries past the grace period that nobody holds or will run.

    ``waiting`` are the task ids of messages waiting in the lanes (None: the broker
    cannot tell, so waiting deliveries are trusted to it).
    """
    now = time.time() if now is None else now
    cutoff = int((now - core.settings.recovery_grace) * 1000)
    with reaching_redis():
        members = core.redis.zrangebyscore(core.keys.inflight, "-inf", cutoff, start=0, num=BATCH)
    if not members:
        return []
    pairs = [str(member).split(" ", 1) for member in members]
    records = core.deliveries.get_many([(event_id, handler) for event_id, handler in pairs])
    held = core.liveness.held()
    # Read after the records: a delivery parked meanwhile was not parked on its record.
    parked, leased = (
        core.flow.parked() if any(r is not None and r.parked for r in records) else (set(), set())
    )
    found, finished = [], []
    for (event_id, handler), record in zip(pairs, records, strict=True):
        if record is None or record.status not in IN_FLIGHT:
            finished.append(inflight_member(event_id, handler))  # retention took it, or done
            continue
        if _moved_since(record, cutoff):
            # It took a step between the index read and the record read (a worker started
            # it, say, and has not listed it in a heartbeat yet): not stuck, only busy.
            continue
        member = inflight_member(event_id, handler)
        why = _why_stuck(record, held, waiting, member in parked, member in leased, cutoff)
        if why:
            found.append(
                Stuck(
                    event_id,
                    handler,
                    record.status,
                    record.task_id,
                    why,
                    record.updated_at,
                    record.carry,
                )
            )
    if finished:
        with reaching_redis():
            core.redis.zrem(core.keys.inflight, *finished)
    return found


#: Statuses of a delivery that waits for, or is in, a worker.
IN_FLIGHT = (Status.QUEUED, Status.WAITING, Status.RUNNING, Status.RETRYING)


def _moved_since(record: Delivery, cutoff_ms: int) -> bool:
    """True when the record's last step is younger than the grace period's cutoff."""
    try:
        updated = datetime.fromisoformat(record.updated_at.replace("Z", "+00:00"))
    except ValueError:
        return False
    return updated.timestamp() * 1000 > cutoff_ms


def _why_stuck(
    record: Delivery,
    held: set[str],
    waiting: set[str] | None,
    on_parked_list: bool,
    leased: bool,
    cutoff_ms: int,
) -> str:
    if record.task_id in held or on_parked_list:  # a parked delivery is flow control's to wake
        return ""
    if record.due:  # held in the store: the relay sends it when due
        return "it was due and nobody sent it" if record.due < cutoff_ms else ""
    if record.status is Status.RUNNING:
        return "its worker is gone"
    if record.status is Status.QUEUED and record.enqueue_failed:
        return "its message was never sent"
    if record.parked and waiting is None and not leased:
        # RabbitMQ cannot say whether its message waits: the slot's lease is the bound.
        return "it was handed a concurrency slot, and its lease ran out before it started"
    if waiting is None or record.task_id in waiting:
        return ""
    if record.parked:
        return "it was handed a concurrency slot, but its message is in no lane"
    return "its message is in no lane and no live worker holds it"


def recover(core: Core, waiting: set[str] | None) -> list[Stuck]:
    """Re-enqueue every stuck delivery under a new task id; those recovered."""
    enqueuer = core._enqueuer()
    recovered = []
    for item in stuck(core, waiting):
        step = "recover_running" if item.status is Status.RUNNING else "recover_waiting"
        task_id = uuid.uuid4().hex
        applied = core.deliveries.apply(
            Change(
                item.event_id,
                item.handler,
                step,
                Status.QUEUED,
                f"recovered: {item.why}",
                task_id=task_id,
                # A broker that redelivers the dead worker's message (RabbitMQ, at once)
                # may have a live worker start it meanwhile, under the same task id.
                options={"expect_task": item.task_id, "expect_updated": item.updated_at},
            )
        )
        if not applied.ok:
            continue  # it moved on meanwhile
        try:
            event = core.store.get(item.event_id).event
            enqueuer.deliver(event, item.handler, task_id, flow=item.carry or None)
        except (EdaError, Exception) as exc:  # the next pass tries it again
            log.warning(
                "could not recover a delivery yet: %s",
                exc,
                extra={"event_id": item.event_id, "handler": item.handler},
            )
            core.deliveries.apply(
                Change(
                    item.event_id,
                    item.handler,
                    "unsent",
                    Status.QUEUED,
                    f"recovery: {exc}",
                    task_id=task_id,
                    options={"enqueue_failed": True},
                )
            )
            continue
        log.warning(
            "recovered a stuck delivery: %s",
            item.why,
            extra={"event_id": item.event_id, "handler": item.handler},
        )
        recovered.append(item)
    return recovered


def stuck_counts(core: Core, waiting: set[str] | None) -> dict[str, int]:
    """Deliveries stuck past the grace period, by status (what the next pass recovers)."""
    return dict(Counter(str(item.status) for item in stuck(core, waiting)))
