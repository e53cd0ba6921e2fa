"""The delivery: one event handed to one handler, its record, its lifecycle, one attempt's run.

::

                      dispatch: condition fails
          (none) ──────────────────────────────────────────► skipped
            │ dispatch
            ▼          dispatch / sweeper (message unsent)
         queued ◄───┐ ─────────────┐        worker: flow control holds it
            │       └──────────────┘  ──────────────────────────► waiting ──► start, or
            │                                  (slot, rate, debounce,       skipped (dropped,
            │                                   budget, model pause)        coalesced) / dead
            │ worker: start            worker: start
            ▼                     ┌──────────────────┐
         running ──────────────► retrying ◄──────────┘
            │  ▲ worker: the same attempt again (its worker died, or could not record)
            │  └─┘
            ├── worker: finish ──► succeeded | skipped (a filter said no)
            ├── worker: finish ──► stopped  (the handler stopped on a limit: an agent's
            │                                turns, token budget, output or a refusal)
            └── worker: finish ──► dead  (permanent, out of retries, or its worker kept
                                         dying; the dead letter is written in the same step)

    any status ── operator: retry or replay (a dead letter taken in the same step)
                  ──► queued (a new run)
    queued, waiting, retrying, running ── sweeper: recover (no message, no live worker
                                 holds it) ──► queued under a new task id (the same run;
                                 an attempt that never ended restarts in place)
    retrying, waiting ── relay: due (a wait over EDA_RETRY_HOLD_MAX is kept in the store,
                                 no message) ──► queued under a new task id
    dead ── operator: discard ──► dead (the reason is noted)
    queued ── operator: the broker refused the requeue ──► the status (and the dead
                                                           letter) it had before

Each step is one Lua script call (``lua/delivery.lua``); :data:`STEPS` says from
which statuses each is legal, and the script refuses any other. A delivery keeps
its **runs** (the first dispatch, each replay or retry from the dead-letter
queue) and each run its **attempts**: number, task id, worker, start and end,
duration, and what happened (status, reason, error; the handler's outcome is kept
beside it). Attempt numbers count only attempts that ran the handler: a worker
that died, or a store that could not be reached, restarts the same attempt, so
neither spends the handler's retry budget.

:func:`run_attempt` runs one attempt and returns a :class:`Verdict`; the Celery
task (``tasks/delivery.py``) only maps the verdict onto Celery.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from eda import logs, metrics, traces
from eda.dead_letters import DeadLetter, letter_id
from eda.errors import (
    EdaError,
    InvalidInput,
    ModelBusy,
    NotFound,
    PermanentError,
    StoreUnavailable,
    TransientError,
)
from eda.event import DeliveryInfo, Event
from eda.handlers import Skip, Stop
from eda.journal import Deferred, deferring, run_key
from eda.retry import RetryPolicy
from eda.times import now_iso

if TYPE_CHECKING:
    from eda.core import Core
    from eda.flow import Verdict as FlowVerdict
    from eda.store import EventStore, ScriptCall

log = logging.getLogger(__name__)

#: Longest reason kept with a status change.
MAX_REASON = 500
#: Longest error message kept on an attempt, and the end of its traceback.
MAX_ERROR = 500
MAX_TRACEBACK = 2000
#: Usage counters summed over every attempt's outcome (an agent's tokens).
TOTALS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "tool_calls",
    "refused_tool_calls",
    "turns",
)


class Status(StrEnum):
    """Where a delivery stands."""

    QUEUED = "queued"
    #: Held by flow control: a concurrency slot, a rate, a debounce period, a budget.
    WAITING = "waiting"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"
    STOPPED = "stopped"
    DEAD = "dead"


#: No record yet.
NEW = "new"
ALL = (NEW, *Status)


@dataclass(frozen=True)
class Step:
    """One legal move: the statuses it starts from, where it may lead, and who makes it."""

    sources: tuple[str, ...]
    targets: tuple[Status, ...]
    by: str


#: Every legal step of the lifecycle (drawn in this module's docstring).
STEPS: dict[str, Step] = {
    "dispatch": Step((NEW, Status.QUEUED), (Status.QUEUED,), "dispatch, sweeper"),
    "plan_skip": Step((NEW,), (Status.SKIPPED,), "dispatch"),
    "requeue": Step(ALL, (Status.QUEUED,), "operator, sweeper"),
    "unsent": Step((Status.QUEUED,), (Status.QUEUED,), "dispatch"),
    "start": Step(
        (Status.QUEUED, Status.RETRYING, Status.WAITING, Status.RUNNING),
        (Status.RUNNING,),
        "worker",
    ),
    "wait": Step((Status.QUEUED, Status.RETRYING, Status.WAITING), (Status.WAITING,), "worker"),
    "flow_end": Step(
        (Status.QUEUED, Status.RETRYING, Status.WAITING), (Status.SKIPPED, Status.DEAD), "worker"
    ),
    "finish": Step(
        (Status.RUNNING,),
        (Status.SUCCEEDED, Status.SKIPPED, Status.STOPPED, Status.RETRYING, Status.DEAD),
        "worker",
    ),
    "discard": Step((Status.DEAD,), (Status.DEAD,), "operator"),
    "revert": Step((Status.QUEUED,), tuple(Status), "operator: the broker refused a requeue"),
    "recover_waiting": Step(
        (Status.QUEUED, Status.RETRYING, Status.WAITING), (Status.QUEUED,), "sweeper"
    ),
    "recover_running": Step((Status.RUNNING,), (Status.QUEUED,), "sweeper"),
    "send_held": Step((Status.RETRYING, Status.WAITING), (Status.QUEUED,), "relay"),
    "unwoken": Step((Status.WAITING,), (Status.QUEUED,), "flow control: a woken send failed"),
}
#: The script's own step for each lifecycle step.
SCRIPT_STEP = {
    "dispatch": "queue",
    "plan_skip": "skip",
    "requeue": "queue",
    "unsent": "note",
    "start": "start",
    "finish": "finish",
    "discard": "note",
    "revert": "note",
    "recover_waiting": "queue",
    "recover_running": "queue",
    "send_held": "queue",
    "wait": "note",
    "flow_end": "note",
    "unwoken": "note",
}


def legal(step: str, source: str, target: Status) -> bool:
    """True when ``step`` may move a delivery from ``source`` to ``target``."""
    rule = STEPS[step]
    return source in rule.sources and target in rule.targets


# -- the record ---------------------------------------------------------------------------------


@dataclass
class Attempt:
    """One run of the handler (restarted in place when its worker died)."""

    number: int
    task_id: str = ""
    worker: str = ""
    started_at: str = ""
    starts: int = 1
    ended_at: str | None = None
    duration_ms: float | None = None
    status: str | None = None
    reason: str = ""
    error: dict[str, str] | None = None
    outcome: dict[str, Any] | None = None


@dataclass
class Run:
    """The attempts since a delivery was queued afresh (dispatch, replay, retry)."""

    number: int
    reason: str
    at: str
    replay: bool = False
    attempts: list[Attempt] = field(default_factory=list)
    dropped_attempts: int = 0
    notes: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Delivery:
    """A delivery's record, as the store keeps it."""

    handler: str
    status: Status
    task_id: str = ""
    replay: bool = False
    enqueue_failed: bool = False
    created_at: str = ""
    updated_at: str = ""
    runs: list[Run] = field(default_factory=list)
    dropped_runs: int = 0
    #: Waiting with no message: parked for a concurrency slot, which wakes it.
    parked: bool = False
    #: Retrying or waiting with no message until then (epoch ms; 0: not held in the
    #: store), and what its next pass is given (flow control's state).
    due: int = 0
    carry: dict[str, Any] = field(default_factory=dict)
    #: What a waiting delivery waits for (``eda.flow.HOLDS``).
    held: str = ""

    @classmethod
    def parse(cls, raw: str, outcomes: Mapping[str, str], handler: str) -> Delivery:
        """A record from its stored JSON (the field ``handler`` of the event's deliveries
        hash) and the event's outcomes hash. What the JSON leaves out (delivery.lua) reads
        as it was: a flag false, a count 0, an attempt's task id the record's.
        """
        data = json.loads(raw)
        runs = []
        for run in _list(data.get("runs")):
            attempts = []
            for item in _list(run.get("attempts")):
                attempt = Attempt(**{k: v for k, v in item.items() if k in Attempt.__annotations__})
                attempt.task_id = attempt.task_id or data.get("task_id", "")
                found = outcomes.get(f"{handler}#{run['number']}.{attempt.number}")
                attempt.outcome = json.loads(found) if found else None
                attempts.append(attempt)
            runs.append(
                Run(
                    number=run["number"],
                    reason=run.get("reason", ""),
                    at=run.get("at", ""),
                    replay=bool(run.get("replay")),
                    attempts=attempts,
                    dropped_attempts=run.get("dropped_attempts", 0),
                    notes=[
                        {**note, "after": note.get("after", 0)} for note in _list(run.get("notes"))
                    ],
                )
            )
        return cls(
            handler=handler,
            status=Status(data["status"]),
            task_id=data.get("task_id", ""),
            replay=bool(data.get("replay")),
            enqueue_failed=bool(data.get("enqueue_failed")),
            created_at=data.get("created_at", ""),
            updated_at=data.get("updated_at", ""),
            runs=runs,
            dropped_runs=data.get("dropped_runs", 0),
            parked=bool(data.get("parked")),
            due=int(data.get("due") or 0),
            carry=data["carry"] if isinstance(data.get("carry"), dict) else {},
            held=data.get("held") or "",
        )

    @property
    def attempts(self) -> list[Attempt]:
        """The attempts of the current run."""
        return self.runs[-1].attempts if self.runs else []

    @property
    def last(self) -> Attempt | None:
        return next((a for run in reversed(self.runs) for a in reversed(run.attempts)), None)

    def totals(self) -> dict[str, float]:
        """Attempts, runs and usage counters (tokens) summed over every attempt kept."""
        totals: dict[str, float] = {"runs": len(self.runs) + self.dropped_runs, "attempts": 0}
        for run in self.runs:
            totals["attempts"] += len(run.attempts) + run.dropped_attempts
            for attempt in run.attempts:
                _add_usage(totals, attempt.outcome)
        return totals

    def history(self) -> list[dict[str, Any]]:
        """Every status change kept, oldest first: notes, each attempt's start and end."""
        changes: list[dict[str, Any]] = []
        for run in self.runs:
            notes = {n: [x for x in run.notes if x.get("after", 0) == n] for n in _afters(run)}
            changes.extend(_change(note) for note in notes.get(0, []))
            for attempt in run.attempts:
                started = {
                    "status": "running",
                    "at": attempt.started_at,
                    "reason": f"attempt {attempt.number}",
                }
                changes.append(started)
                if attempt.ended_at:
                    changes.append(
                        {"status": attempt.status, "at": attempt.ended_at, "reason": attempt.reason}
                    )
                changes.extend(_change(note) for note in notes.get(attempt.number, []))
        return changes

    def as_dict(self) -> dict[str, Any]:
        """What the faces show: the status, the current run's summary, every run kept."""
        last = self.last
        return {
            "handler": self.handler,
            "status": str(self.status),
            "attempts": len(self.attempts) + (self.runs[-1].dropped_attempts if self.runs else 0),
            "task_id": self.task_id,
            "replay": self.replay,
            "enqueue_failed": self.enqueue_failed,
            "error": last.error["message"] if last and last.error else None,
            "outcome": last.outcome if last else None,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "totals": self.totals(),
            "history": self.history(),
            "runs": [_run_dict(run) for run in self.runs],
            "dropped_runs": self.dropped_runs,
        }


def _run_dict(run: Run) -> dict[str, Any]:
    return {
        "number": run.number,
        "reason": run.reason,
        "at": run.at,
        "replay": run.replay,
        "dropped_attempts": run.dropped_attempts,
        "notes": run.notes,
        "attempts": [vars(attempt) for attempt in run.attempts],
    }


def _afters(run: Run) -> set[int]:
    return {int(note.get("after", 0)) for note in run.notes}


def _change(note: dict[str, Any]) -> dict[str, Any]:
    return {"status": note["status"], "at": note["at"], "reason": note["reason"]}


def _list(value: Any) -> list[Any]:
    """A stored list (Lua's cjson writes an empty one as ``{}``)."""
    return value if isinstance(value, list) else []


def _add_usage(totals: dict[str, float], outcome: Mapping[str, Any] | None) -> None:
    if not isinstance(outcome, Mapping):
        return
    usage = outcome.get("usage")
    for key, value in [
        *(usage.items() if isinstance(usage, Mapping) else ()),
        ("turns", outcome.get("turns")),
        ("tool_calls", len(outcome.get("tool_calls") or ())),
        # counted only when there were any: totals keep their shape for other handlers
        (
            "refused_tool_calls",
            sum(1 for c in outcome.get("tool_calls") or () if _refused(c)) or None,
        ),
    ]:
        if key in TOTALS and isinstance(value, int | float) and not isinstance(value, bool):
            totals[key] = totals.get(key, 0) + value


def _refused(call: Any) -> bool:
    return isinstance(call, Mapping) and bool(call.get("refused"))


# -- the steps, as store calls ------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One step for one delivery; see :class:`Deliveries`."""

    event_id: str
    handler: str
    step: str
    target: Status
    reason: str = ""
    task_id: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    outcome: dict[str, Any] | None = None
    letter: DeadLetter | None = None
    #: Entries (JSON) of the run's journal that the step appends (option ``journal``).
    journal: tuple[str, ...] = ()


@dataclass(frozen=True)
class Applied:
    """What a step did: the status before, the event's status after, and the verdict."""

    previous: str
    event_status: str
    result: str  # "ok", "refused" or "superseded"
    extra: tuple[Any, ...] = ()

    @property
    def ok(self) -> bool:
        return self.result == "ok"


def reverting(queued: Applied, event_id: str, handler: str, task_id: str, reason: str) -> Change:
    """The step that undoes a requeue the broker refused: back to the status it had,
    with the dead letter it took (``take_letter``) back in its place."""
    back = Status(queued.previous) if queued.previous in set(Status) else Status.DEAD
    letter, options = None, {}
    if back in (Status.RETRYING, Status.WAITING):
        # No message is behind it any more (a held one left the due set with the requeue,
        # a countdown's was superseded): held again, due at once, for the relay to send.
        options = held_until(0.0, {})
    if queued.extra:  # a requeue's extra: the letter it took, as JSON, and its score
        letter = DeadLetter(**json.loads(queued.extra[0]))
        if len(queued.extra) > 1:  # (none when the index had lost it)
            options |= {"letter_score": float(queued.extra[1])}
    return Change(event_id, handler, "revert", back, reason, task_id, options, letter=letter)


class Deliveries:
    """The delivery steps of one store: each one script call, many in one pipeline."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.keys = store.keys
        settings = store.settings
        self.kept = {"max_attempts": settings.max_attempts_kept, "max_runs": settings.max_runs_kept}

    def apply(self, change: Change) -> Applied:
        """Apply one step; NotFound when the event is no longer stored."""
        reply = self.apply_many([change])[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    def apply_many(self, changes: list[Change]) -> list[Applied | Exception]:
        """Apply steps in one pipeline; a step that failed gives its error in its place."""
        replies = self.store.run_scripts([self._call(change) for change in changes])
        results: list[Applied | Exception] = []
        for change, reply in zip(changes, replies, strict=True):
            if isinstance(reply, Exception):
                missing = str(reply).startswith("NOTFOUND")
                results.append(_not_found(change.event_id) if missing else reply)
            else:
                results.append(
                    Applied(str(reply[0]), str(reply[1]), str(reply[2]), tuple(reply[3:]))
                )
        return results

    def _call(self, change: Change) -> ScriptCall:
        rule = STEPS[change.step]
        if change.target not in rule.targets:
            raise InvalidInput("status", f"{change.step} cannot lead to {change.target}")
        keys = self.keys
        letter = change.letter
        dead_letter = letter_id(change.event_id, change.handler)
        options = {
            **self.kept,
            "letter_id": dead_letter,
            **change.options,
            "member": inflight_member(change.event_id, change.handler),
            "now_ms": int(time.time() * 1000),
        }
        if letter is not None:  # a revert puts a taken letter back in its place
            options.setdefault("letter_score", time.time())
        touched = [
            keys.deliveries(change.event_id),
            keys.event(change.event_id),
            keys.outcomes(change.event_id),
            keys.dlq,
            keys.dead_letter(dead_letter),
            keys.inflight,
            keys.due,
            keys.flow_pauses,
            keys.journal(change.event_id),
        ]
        spend = options.get("spend")
        if spend:  # the day's counts of the agent, which the finish adds to
            day = spend["day"]
            touched += [keys.flow_budget(change.handler, day), keys.flow_cost(change.handler, day)]
        return (
            self.store.scripts.delivery,
            touched,
            [
                change.handler,
                SCRIPT_STEP[change.step],
                now_iso(),
                change.reason[:MAX_REASON],
                ",".join(rule.sources),
                str(change.target),
                change.task_id,
                json.dumps(options),
                _json(change.outcome),
                json.dumps(letter.trimmed().as_record()) if letter else "",
                *change.journal,
            ],
        )

    def get(self, event_id: str, handler: str) -> Delivery | None:
        """One delivery's record, None when there is none."""
        return self.get_many([(event_id, handler)])[0]

    def get_many(self, pairs: list[tuple[str, str]]) -> list[Delivery | None]:
        """The records of these (event id, handler) deliveries, in one round trip."""
        pipe = self.store.redis.pipeline(transaction=False)
        for event_id, handler in pairs:
            pipe.hget(self.keys.deliveries(event_id), handler)
            pipe.hgetall(self.keys.outcomes(event_id))
        replies = self.store.execute(pipe)
        return [
            Delivery.parse(raw, outcomes, handler) if raw else None
            for (_, handler), raw, outcomes in zip(pairs, replies[::2], replies[1::2], strict=True)
        ]


def inflight_member(event_id: str, handler: str) -> str:
    """A delivery as the in-flight index names it (handler names hold no spaces)."""
    return f"{event_id} {handler}"


def _json(outcome: dict[str, Any] | None) -> str:
    """An outcome as JSON for the store ("" for none); one that is not JSON says why."""
    if outcome is None:
        return ""
    try:
        return json.dumps(outcome, default=str)
    except (TypeError, ValueError) as exc:
        return json.dumps({"unrecordable": str(exc)})


def _not_found(event_id: str) -> NotFound:
    return NotFound("event_id", f"no event {event_id!r} is stored")


# -- one attempt --------------------------------------------------------------------------------


class Outcome(StrEnum):
    """What an attempt came to, for the adapter that ran it."""

    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"
    STOPPED = "stopped"  # on a limit: terminal, not retried
    RETRY = "retry"
    DEAD = "dead"
    WAIT = "wait"  # flow control holds it: again after ``delay``, or when a slot frees
    NOT_RUN = "not run"  # already done, or another task holds the delivery
    GONE = "gone"  # the event is no longer stored


@dataclass(frozen=True)
class Verdict:
    """An attempt's end: what happened, and for a retry after how many seconds."""

    outcome: Outcome
    attempt: int = 0
    delay: float = 0.0
    reason: str = ""
    #: The failure, for a retry or a dead letter: ``module.Class: message`` (bounded).
    error: str = ""
    #: WAIT: what the delivery carries to its next pass, and whether it waits parked
    #: (no message: a freed concurrency slot sends it again).
    state: dict[str, Any] = field(default_factory=dict)
    parked: bool = False
    #: RETRY or WAIT kept in the store until due (``EDA_RETRY_HOLD_MAX``): no countdown
    #: message; the relay sends the delivery again then.
    stored: bool = False


def run_attempt(
    core: Core,
    event_id: str,
    handler: str,
    task_id: str,
    worker: str = "",
    flow_state: dict[str, Any] | None = None,
    trace: dict[str, str] | None = None,
    event_type: str | None = None,
) -> Verdict:
    """Run one attempt of a delivery; record, trace, count and log how it ended; the verdict.

    ``trace`` is the event's trace context as its message carried it (None: read it);
    ``event_type``, the event's type as its message carried it (None: not known).

    A delivery under flow control passes its gate first (``eda/flow.py``): it may
    wait (``WAIT``: come back after ``delay`` with ``state``, or, parked, be sent
    again when a slot frees), or end without running (dropped, coalesced, budget).
    A store that does not answer is waited for, up to ``EDA_STORE_WAIT`` seconds
    at each step, so that a handler that ran is not run again for a blink. Raises
    StoreUnavailable past that: then the attempt is left open, and recovery sends
    the delivery again once nobody holds it (the attempt restarts in place and
    spends nothing).
    """
    with traces.delivery(core, event_id, handler, task_id, trace) as span:
        ended = _gate_and_run(core, event_id, handler, task_id, worker, flow_state, event_type)
        verdict = _noted(handler, ended)
        traces.attempt_ended(span, str(verdict.outcome), verdict.attempt)
    return verdict


def _gate_and_run(
    core: Core,
    event_id: str,
    handler: str,
    task_id: str,
    worker: str,
    flow_state: dict[str, Any] | None,
    event_type: str | None = None,
) -> Verdict:
    """Through flow control's gate (when the delivery has flow), then the attempt.

    A delivery whose only flow control is its model's pauses (an agent no route limits)
    passes no gate of its own: the start step looks at the pause, in the same call. With
    the event's type known, that is whether the handler's rules and those of the type's
    routes give it any: a handler limited on one route does not send its other routes'
    deliveries through the gate (a round trip, and the event read and parsed twice).
    """
    lease = ""
    state = dict(flow_state or {})
    model = core.handlers.model(handler) if core.handlers is not None else None
    if event_type is None:
        has_flow = core.gated(handler)
    else:
        has_flow = core.flow_rules(handler, event_type) is not None
    if has_flow:
        gated = _through_gate(core, event_id, handler, task_id, state, model)
        if isinstance(gated, Verdict):
            return gated
        lease, model = gated, None  # the gate looked at the pause
    # A retry passes its gate again, but a debounce it passed stays passed.
    carry = {"debounced": True} if state.get("debounced") else {}
    try:
        pausing = (model, state) if model else None
        return _attempt(core, event_id, handler, task_id, worker, carry, pausing)
    finally:
        if lease:
            _give_back(core, lease, event_id, handler)


#: Verdicts of a delivery that ran no attempt: held by flow control, or not this task's.
NO_ATTEMPT = (Outcome.WAIT, Outcome.NOT_RUN, Outcome.GONE)


def _noted(handler: str, verdict: Verdict) -> Verdict:
    """Count the verdict, and log what needs an eye: a retry, a dead letter, a stop."""
    outcome = verdict.outcome
    if outcome not in NO_ATTEMPT:
        metrics.attempt_ended(handler, str(outcome), final=outcome is not Outcome.RETRY)
    if outcome is Outcome.RETRY:
        log.info(
            "retrying in %.3f s after attempt %d: %s",
            verdict.delay,
            verdict.attempt,
            verdict.reason,
        )
    elif outcome is Outcome.SUCCEEDED:
        # A success only at DEBUG: the store keeps it, and a line per success cost a
        # busy worker a tenth of its deliveries a second.
        log.debug("succeeded on attempt %d", verdict.attempt)
    elif outcome in (Outcome.DEAD, Outcome.STOPPED):
        ended = "dead-lettered" if outcome is Outcome.DEAD else "stopped"
        log.warning("%s on attempt %d: %s", ended, verdict.attempt, verdict.reason)
    elif outcome is not Outcome.WAIT:
        log.info("%s: %s", outcome, verdict.reason)
    return verdict


def _through_gate(
    core: Core,
    event_id: str,
    handler: str,
    task_id: str,
    state: dict[str, Any],
    model: str | None,
) -> Verdict | str:
    """The gate's verdict, recorded; or the concurrency lease taken ("" for none) to go on.

    The event (not its deliveries: they are not the gate's business) and the pause of the
    handler's ``model`` are read in one round trip.
    """
    from eda import flow

    pipe = core.redis.pipeline(transaction=False)
    pipe.hget(core.keys.event(event_id), "data")
    if model:
        pipe.zscore(core.keys.flow_pauses, model)
    data, *paused = core.store.execute(pipe)
    if data is None:
        return Verdict(Outcome.GONE, reason="the event is no longer stored")
    event = Event.from_json(data)
    pause = core.flow.pause_left(paused[0]) if paused else 0.0
    verdict = flow.gate(core, event, handler, task_id, state, pause=pause)
    if verdict.go:
        return verdict.lease
    if verdict.end:
        status = Status(verdict.end)
        letter = (
            _flow_letter(event, handler, task_id, verdict.reason) if verdict.end == "dead" else None
        )
        applied = core.deliveries.apply(
            Change(
                event_id,
                handler,
                "flow_end",
                status,
                verdict.reason,
                task_id=task_id,
                letter=letter,
            )
        )
        if not applied.ok:
            return Verdict(Outcome.NOT_RUN, reason=f"{applied.result}: it is {applied.previous}")
        outcome = Outcome.DEAD if status is Status.DEAD else Outcome.SKIPPED
        return Verdict(outcome, reason=verdict.reason, error=f"eda.flow: {verdict.reason}")
    return _waits(core, event_id, handler, task_id, verdict)


def _waits(core: Core, event_id: str, handler: str, task_id: str, verdict: FlowVerdict) -> Verdict:
    """Record that flow control holds the delivery (``verdict``), and how it comes back."""
    options: dict[str, Any] = {"parked": verdict.parked, "held": verdict.hold}
    stored = not verdict.parked and verdict.wait > core.settings.retry_hold_max
    if stored:
        options |= held_until(verdict.wait, verdict.state)
    applied = core.deliveries.apply(
        Change(
            event_id,
            handler,
            "wait",
            Status.WAITING,
            verdict.reason,
            task_id=task_id,
            options=options,
        )
    )
    if not applied.ok:
        return Verdict(Outcome.NOT_RUN, reason=f"{applied.result}: it is {applied.previous}")
    # A countdown past the broker's visibility timeout would bring the message back twice.
    delay = min(verdict.wait, core.settings.visibility_timeout / 2)
    return Verdict(
        Outcome.WAIT,
        delay=delay,
        reason=verdict.reason,
        state=verdict.state,
        parked=verdict.parked,
        stored=stored,
    )


def held_until(delay: float, carry: dict[str, Any]) -> dict[str, Any]:
    """The step options that hold a delivery in the store for ``delay`` s (the due set)."""
    return {"due": int((time.time() + delay) * 1000), "carry": carry}


def _flow_letter(event: Event, handler: str, task_id: str, reason: str) -> DeadLetter:
    return DeadLetter(
        event_id=event.id,
        event_type=event.type,
        handler=handler,
        error_class="eda.flow.BudgetSpent",
        error=reason,
        traceback="",
        attempts=0,
        first_failure_at=now_iso(),
        last_failure_at=now_iso(),
        task_id=task_id,
    )


def _give_back(core: Core, lease: str, event_id: str, handler: str) -> None:
    """Free a concurrency slot; should the store be away, the lease runs out by itself."""
    from eda import flow

    try:
        flow.release(core, lease, event_id, handler)
    except Exception as exc:
        log.warning(
            "a concurrency slot is left to expire: %s",
            logs.error_summary(exc),
            extra={"event_id": event_id, "handler": handler},
        )


def _attempt(
    core: Core,
    event_id: str,
    handler: str,
    task_id: str,
    worker: str,
    carry: dict[str, Any],
    pausing: tuple[str, dict[str, Any]] | None = None,
) -> Verdict:
    """Start the attempt, run the handler, record its end (``carry``: a retry's next pass).

    With ``pausing`` (a model, and the flow state of the delivery) the start refuses while
    that model's pause lasts; the delivery then waits it out as the gate would have it wait.
    """
    from eda import flow

    steps = core.deliveries
    options: dict[str, Any] = {"worker": worker}
    if pausing:
        options |= {"pause_model": pausing[0], "pause_at": core.flow.clock()}
    start = Change(event_id, handler, "start", Status.RUNNING, task_id=task_id, options=options)
    try:
        started = patiently(core, lambda: steps.apply(start))
    except NotFound:
        return Verdict(Outcome.GONE, reason="the event is no longer stored")
    if started.result == "paused" and pausing:
        paused = flow.paused(pausing[0], float(started.extra[0]), pausing[1])
        return _waits(core, event_id, handler, task_id, paused)
    if not started.ok:
        return Verdict(Outcome.NOT_RUN, reason=f"{started.result}: it is {started.previous}")
    data, attempt, starts, run = started.extra
    info = DeliveryInfo(
        f"{event_id}:{handler}", handler, int(run), int(attempt), task_id, int(starts)
    )
    event = Event.from_json(data).delivered(info)
    policy = core.policy(handler, event.type)
    ran = Ran(core, event, handler, task_id, int(attempt), time.monotonic(), carry)
    ran.deferred = Deferred(event_id, handler, int(run))
    if int(attempt) == 1 and int(run) <= 1:  # a retry's or a replay's wait is not latency
        metrics.handler_started(handler, event.time)
    if int(starts) > policy.max_retries + 1:
        # The same message keeps coming back because its worker dies (OOM, a crash).
        return ran.failed(
            PermanentError(f"the worker died {int(starts) - 1} times running it"), policy
        )
    if core.handlers is None:
        raise EdaError("a core without handlers cannot run deliveries (use tasks.connect())")
    try:
        with deferring(ran.deferred):  # an agent's last journal entries go with its end
            result = core.handlers.resolve(handler)(event)
    except SystemExit as exc:  # a handler must not end the worker
        return ran.failed(PermanentError(f"the handler called exit({exc.code})"), policy)
    except Skip as skip:
        reason = f"{skip.stage}: {skip.reason}" if skip.stage else skip.reason
        return ran.end(Outcome.SKIPPED, Status.SKIPPED, reason, record=skip.outcome)
    except Stop as stop:
        return ran.end(Outcome.STOPPED, Status.STOPPED, stop.reason, record=stop.outcome)
    except Exception as exc:
        return ran.failed(exc, policy)
    return ran.end(
        Outcome.SUCCEEDED,
        Status.SUCCEEDED,
        f"attempt {attempt} succeeded",
        record=result if isinstance(result, dict) else None,
    )


@dataclass
class Ran:
    """An attempt that started: how its end is recorded."""

    core: Core
    event: Event
    handler: str
    task_id: str
    attempt: int
    began: float
    #: What a retry's next pass is given (flow control's state).
    carry: dict[str, Any] = field(default_factory=dict)
    #: Journal entries the handler left for the attempt's end to write.
    deferred: Deferred | None = None

    def end(
        self,
        outcome: Outcome,
        status: Status,
        reason: str,
        *,
        delay: float = 0.0,
        error: BaseException | None = None,
        letter: DeadLetter | None = None,
        record: dict[str, Any] | None = None,
        carry: dict[str, Any] | None = None,
    ) -> Verdict:
        """Record the attempt's end (one step); the verdict, or NOT_RUN when superseded.

        A retry longer than ``EDA_RETRY_HOLD_MAX`` is held in the store in the same step
        (``carry``: what its next pass is given).
        """
        options: dict[str, Any] = {
            "attempt": self.attempt,
            "duration_ms": round((time.monotonic() - self.began) * 1000, 3),
        }
        stored = outcome is Outcome.RETRY and delay > self.core.settings.retry_hold_max
        if stored:
            options |= held_until(delay, carry or {})
        if error is not None:
            options["error"] = error_record(error)
        spend = self._spend(record)
        if spend:
            options["spend"] = spend
        journal: tuple[str, ...] = ()
        if self.deferred is not None and self.deferred.entries:
            journal = tuple(self.deferred.entries)
            bound = self.core.settings.journal_max_bytes
            options["journal"] = {"run": run_key(self.handler, self.deferred.run), "max": bound}
        change = Change(
            self.event.id,
            self.handler,
            "finish",
            status,
            reason,
            task_id=self.task_id,
            options=options,
            outcome=record,
            letter=letter,
            journal=journal,
        )
        applied = patiently(self.core, lambda: self.core.deliveries.apply(change))
        if not applied.ok:
            return Verdict(Outcome.NOT_RUN, self.attempt, reason=f"{applied.result} on the way out")
        failure = f"{type(error).__module__}.{logs.error_summary(error)}" if error else ""
        return Verdict(outcome, self.attempt, delay, reason, failure, stored=stored)

    def _spend(self, record: dict[str, Any] | None) -> dict[str, Any] | None:
        """What an agent's attempt used, which its finish step adds to the day's budget
        counts: tokens, as the API counts them, and their cost at its model's price
        (``EDA_MODEL_PRICES``); None when nothing was used."""
        from eda.flow import BUDGET_KEPT

        usage = (record or {}).get("usage")
        if not isinstance(usage, Mapping):
            return None
        tokens = sum(v for k, v in usage.items() if k in TOTALS and isinstance(v, int))
        model = (record or {}).get("model")
        if not isinstance(model, str):
            model = self.core.handlers.model(self.handler) if self.core.handlers else None
        price = self.core.settings.model_prices.get(model or "")
        cost = price.cost(usage) if price is not None else 0.0
        if not tokens and not cost:
            return None
        return {"tokens": tokens, "cost": cost, "kept": BUDGET_KEPT, "day": self.core.flow.day()}

    def _pause_model(self, exc: BaseException) -> None:
        """A model that asked to wait (429, 529 with retry-after) holds every caller back."""
        model = self.core.handlers.model(self.handler) if self.core.handlers else None
        if isinstance(exc, ModelBusy) and exc.retry_after and model:
            self.core.flow.pause_model(model, exc.retry_after)
            log.warning("model %s paused for %.1f s for every delivery", model, exc.retry_after)

    def failed(self, exc: BaseException, policy: RetryPolicy) -> Verdict:
        """Retry a transient failure with backoff; dead-letter a permanent or exhausted one."""
        reported = getattr(exc, "outcome", None)
        record = reported if isinstance(reported, dict) else None
        message = logs.error_summary(exc)
        retries = self.attempt - 1
        self._pause_model(exc)
        if not policy.gives_up(exc, retries):
            retry_after = exc.retry_after if isinstance(exc, TransientError) else None
            delay = policy.delay(retries, retry_after)
            return self.end(
                Outcome.RETRY,
                Status.RETRYING,
                f"{message} (next try in {delay:.3f} s)",
                delay=delay,
                error=exc,
                record=record,
                carry=self.carry,
            )
        why = "permanent error" if policy.is_permanent(exc) else "retries exhausted"
        letter = DeadLetter(
            event_id=self.event.id,
            event_type=self.event.type,
            handler=self.handler,
            error_class=f"{type(exc).__module__}.{type(exc).__qualname__}",
            error=str(exc),
            traceback="".join(traceback.format_exception(exc)),
            attempts=self.attempt,
            first_failure_at=self._first_failure(),
            last_failure_at=now_iso(),
            task_id=self.task_id,
        )
        return self.end(
            Outcome.DEAD, Status.DEAD, f"{why}: {message}", error=exc, letter=letter, record=record
        )

    def _first_failure(self) -> str:
        """When the current run's first failure ended (now, for a first attempt)."""
        record = self.core.deliveries.get(self.event.id, self.handler)
        ended = [a.ended_at for a in (record.attempts if record else []) if a.ended_at]
        return ended[0] if ended else now_iso()


T = TypeVar("T")


def patiently(core: Core, step: Callable[[], T]) -> T:
    """Run a store step, waiting out a store that does not answer, up to ``store_wait``."""
    deadline = time.monotonic() + core.settings.store_wait
    pause = 0.05
    while True:
        try:
            return step()
        except StoreUnavailable as exc:
            if time.monotonic() + pause > deadline:
                raise
            if pause == 0.05:  # once per wait, not once per try
                log.warning(
                    "event store unreachable, waiting up to %g s: %s",
                    core.settings.store_wait,
                    logs.error_summary(exc),
                )
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


def error_record(exc: BaseException) -> dict[str, str]:
    """An exception as an attempt keeps it: class, bounded message, the end of the traceback."""
    return {
        "class": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": str(exc)[:MAX_ERROR],
        "traceback": "".join(traceback.format_exception(exc))[-MAX_TRACEBACK:],
    }
