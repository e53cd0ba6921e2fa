"""The core API: what every face (scripts, CLI, admin HTTP API, MCP, tasks) calls.

It stores, routes and dispatches events, keeps deliveries and dead letters,
and replays. It knows nothing of Celery: enqueueing a delivery is the job of
an :class:`Enqueuer` handed in by the caller (``tasks.connect()`` hands in the
Celery one). Without an enqueuer, events are stored and stay ``pending``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import redis

from eda import logs, metrics
from eda.dead_letters import DeadLetter, DeadLetterPage, DeadLetters
from eda.delivery import Applied, Change, Deliveries, Status, reverting
from eda.destinations import DisabledDestinations
from eda.errors import EdaError, InvalidInput, NoBroker, NotFound, reaching_redis
from eda.event import Event
from eda.flow import PRIORITIES, FlowControl, FlowRules
from eda.handlers import HandlerRegistry
from eda.journal import transcripts
from eda.liveness import Liveness
from eda.redis_server import connect
from eda.retry import RetryOverride, RetryPolicy
from eda.routes import Route, RouteTable, check_pattern, subscription_routes, unrouted
from eda.settings import Settings
from eda.store import EventStore, Published, StoredEvent
from eda.times import now_iso

log = logging.getLogger(__name__)

#: Called with (done, total) as a long operation advances.
Progress = Callable[[int, int], None]
#: Most deliveries a replay or a batch retry records and sends together.
REDELIVER_BATCH = 200
#: Seconds of a paced replay or retry one batch holds at most (at ``replay_rate``).
REDELIVER_SLICE = 0.1


class Enqueuer(Protocol):
    """Puts one delivery (event x handler) on the broker."""

    def deliver(
        self,
        event: Event,
        handler: str,
        task_id: str,
        *,
        replay: bool = False,
        flow: dict[str, Any] | None = None,
    ) -> None:
        """Enqueue the delivery (``flow``: state flow control hands it); raise when the broker
        did not take it."""

    def deliver_many(
        self, deliveries: list[tuple[Event, str, str]], *, replay: bool = False
    ) -> None:
        """Enqueue (event, handler, task id) deliveries together; raise unless all were taken."""

    def waiting_task_ids(self) -> set[str] | None:
        """Task ids of the messages waiting in the lanes; None when the broker cannot say."""

    def queue_lengths(self) -> dict[str, int]:
        """Messages waiting in each lane."""


@dataclass(frozen=True)
class Planned:
    """One delivery that dispatching an event decided on."""

    handler: str
    skipped_by: str | None = None


@dataclass
class ReplayReport:
    """What a replay did, or would do in a dry run."""

    dry_run: bool
    events: int = 0
    deliveries: int = 0
    interrupted: bool = False
    items: list[dict[str, Any]] = field(default_factory=list)
    #: Events the window holds that have handlers, replayed or not (the limit cut the rest).
    matched: int = 0
    #: Where the next replay of the same window starts (``since``: the stream position of
    #: the first event the limit left out), when the limit cut it.
    next_since: str | None = None

    @property
    def left(self) -> int:
        """Matching events the limit left out."""
        return self.matched - self.events

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "events": self.events,
            "deliveries": self.deliveries,
            "interrupted": self.interrupted,
            "matched": self.matched,
            "left": self.left,
            "next_since": self.next_since,
            "items": self.items,
        }


@dataclass
class RetryReport:
    """What a batch retry of dead letters did, and how many matching letters are left."""

    retried: list[dict[str, Any]] = field(default_factory=list)
    #: Matching dead letters still in the queue afterwards.
    left: int = 0
    interrupted: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "retried": len(self.retried),
            "left": self.left,
            "interrupted": self.interrupted,
            "items": self.retried,
        }


def parsed_subscriptions(raw: Iterable[str | bytes]) -> list[dict[str, Any]]:
    """Subscriptions as stored (JSON), read and in order of pattern and handler."""
    return sorted((json.loads(x) for x in raw), key=lambda s: (s["pattern"], s["handler"]))


class Core:
    """The event store, routing, dead letters and replay, for one deployment."""

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis | None = None,
        enqueuer: Enqueuer | None = None,
        routes: RouteTable | None = None,
        handlers: HandlerRegistry | None = None,
        *,
        defer_dispatch: bool = False,
    ) -> None:
        self.settings = settings
        #: Hand stored events to the workers' dispatchers instead of dispatching them here
        #: (what the web does: the request then costs one Redis write).
        self.defer_dispatch = defer_dispatch
        self.redis = client if client is not None else connect(settings)
        self.store = EventStore(self.redis, settings)
        self.keys = self.store.keys
        self.deliveries = Deliveries(self.store)
        self.dead_letters = DeadLetters(self.redis, self.keys)
        self.liveness = Liveness(self.redis, self.keys, settings.heartbeat_interval)
        self.flow = FlowControl(self.redis, self.keys, settings.flow_lease)
        self.enqueuer = enqueuer
        self.routes = routes if routes is not None else RouteTable()
        #: Who can be named and run; None (a core that only reads) checks no names.
        self.handlers = handlers
        self.default_policy = RetryPolicy.from_settings(settings)

    # -- events -----------------------------------------------------------------------------

    def publish(
        self, event_type: str, payload: Any, source: str = "unknown", **fields: Any
    ) -> Published:
        """Validate, store and dispatch an event; see :meth:`publish_event`."""
        return self.publish_event(
            Event.create(type=event_type, payload=payload, source=source, **fields)
        )

    def publish_event(self, event: Event) -> Published:
        """Store an event durably, then dispatch it (or, deferring, hand it to a dispatcher).

        The store write is what counts: once it returns, the event is safe and the
        caller is told so. When dispatching fails (the broker or Redis is down) the
        event stays ``pending`` and the sweeper dispatches it later. An event past the
        causation depth limit or its chain's budget is stored ``blocked`` and not
        dispatched (``published.blocked`` says why).
        """
        published = self.store.publish(event, notify=self.defer_dispatch)
        if not published.duplicate:
            metrics.event_stored(event.type, blocked=bool(published.blocked))
        if published.blocked:
            log.warning(
                "event blocked, not dispatched: %s", published.blocked, extra={"event_id": event.id}
            )
            return published
        if not published.duplicate and self.enqueuer is not None and not self.defer_dispatch:
            try:
                self.dispatch(event)
            except Exception as exc:
                failure = logs.error_summary(exc)
                log.warning(
                    "dispatch deferred to the sweeper: %s", failure, extra={"event_id": event.id}
                )
                with contextlib.suppress(EdaError):
                    self.store.mark_undispatched(
                        event.id, f"dispatch failed, will be swept: {failure}"
                    )
        return published

    def get_event(self, event_id: str) -> StoredEvent:
        """One event with its deliveries; a dry run's request shown whole (its template in)."""
        stored = self.store.get(event_id)
        for delivery in stored.deliveries.values():
            outcomes = [delivery.get("outcome")]
            outcomes += [a.get("outcome") for r in delivery.get("runs", []) for a in r["attempts"]]
            for outcome in outcomes:
                self._expand_request(outcome)
        return stored

    def keep_request_template(self, template: dict[str, Any]) -> str:
        """Keep the per-agent part of a dry run's request (system prompt, tools) once; its
        digest, which the delivery's outcome keeps instead of a copy."""
        text = json.dumps(template, sort_keys=True, default=str)
        digest = hashlib.sha256(text.encode()).hexdigest()[:24]
        with reaching_redis():
            self.redis.set(self.keys.dry_run_template(digest), text, nx=True)
        return digest

    def _expand_request(self, outcome: Any) -> None:
        request = outcome.get("request") if isinstance(outcome, dict) else None
        if not isinstance(request, dict) or "template" not in request:
            return
        with reaching_redis():
            text = self.redis.get(self.keys.dry_run_template(str(request["template"])))
        if text:
            request.update(json.loads(text))

    def transcripts(self, event_id: str, *, full: bool = False) -> dict[str, Any]:
        """What each agent run of an event did, turn by turn, from the runs' journals
        (see :func:`eda.journal.transcripts`); compact unless ``full``."""
        return transcripts(self.store, event_id, full=full)

    def history(
        self,
        event_type: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int = 100,
        newest_first: bool = True,
    ) -> list[StoredEvent]:
        """Stored events by type and window; a str bound is a stream id (``(`` excludes it)."""
        return self.store.history(event_type, since, until, limit, newest_first)

    def acknowledge(self, event_id: str, status: str = "processed", reason: str = "") -> str:
        """Set an event's status by hand; returns the status it had."""
        return self.store.acknowledge(event_id, status, reason or "acknowledged by an operator")

    # -- routing ----------------------------------------------------------------------------

    def subscribe(self, patterns: list[str], handler: str) -> list[dict[str, Any]]:
        """Route event types to a handler from now on, without a restart."""
        if not patterns:
            raise InvalidInput("event_types", "give at least one event type or pattern")
        self.check_handler(handler, "handler_id")
        for pattern in patterns:
            check_pattern(pattern, "event_types")
        at = now_iso()
        created = [{"pattern": p, "handler": handler, "created_at": at} for p in patterns]
        with reaching_redis():
            self.redis.hset(
                self.keys.subscriptions,
                mapping={f"{s['pattern']} {handler}": json.dumps(s) for s in created},
            )
        return created

    def check_handler(self, handler: str, field: str) -> None:
        """InvalidInput unless ``handler`` names a handler this deployment can run."""
        if not handler:
            raise InvalidInput(field, "must not be empty")
        if self.handlers is not None and not self.handlers.known(handler):
            raise InvalidInput(
                field,
                f"{handler!r} is neither a registered handler or agent, nor a function of "
                "a module of EDA_HANDLER_MODULES or of the routes file ('package.module:function')",
            )

    def flow_rules(self, handler: str, event_type: str) -> FlowRules | None:
        """The flow control of a delivery: the handler's (an agent's), narrowed by its routes'."""
        rules = self.handlers.flow(handler) if self.handlers is not None else None
        for route in self.routes.matching(event_type):
            if route.handler == handler and route.flow is not None:
                rules = route.flow.over(rules)
        return rules

    def gated(self, handler: str) -> bool:
        """True when some route or the handler itself declares flow control for it: its
        deliveries pass flow control's gate (a handler that only calls a model waits out
        that model's pauses at its start)."""
        if self.handlers is not None and self.handlers.flow(handler):
            return True
        return any(r.handler == handler and r.flow is not None for r in self.routes.routes)

    def priority(self, handler: str, event_type: str) -> int:
        """The broker priority of a delivery (its route's ``priority``, else normal)."""
        rules = self.flow_rules(handler, event_type)
        return PRIORITIES[(rules.priority if rules else None) or "normal"]

    def policy(self, handler: str, event_type: str) -> RetryPolicy:
        """The retry policy of a delivery: the defaults, the handler's, then its routes'."""
        overrides: list[RetryOverride | None] = (
            [self.handlers.retry(handler)] if self.handlers else []
        )
        for route in self.routes.matching(event_type):
            if route.handler == handler:
                overrides.append(route.retry)
        policy = self.default_policy
        for override in overrides:
            policy = policy.narrowed(override)
        return policy

    def unsubscribe(self, pattern: str, handler: str) -> bool:
        with reaching_redis():
            return bool(self.redis.hdel(self.keys.subscriptions, f"{pattern} {handler}"))

    def subscriptions(self) -> list[dict[str, Any]]:
        with reaching_redis():
            return parsed_subscriptions(self.redis.hvals(self.keys.subscriptions))

    def plan(
        self, event: Event, subscriptions: list[dict[str, Any]] | None = None
    ) -> list[Planned]:
        """Which handlers receive this event: routes, then subscriptions; each handler once.

        ``subscriptions`` as :meth:`subscriptions` returned them, when the caller read
        them once for a batch of events.
        """
        known = self.subscriptions() if subscriptions is None else subscriptions
        routes: list[Route] = [
            *self.routes.matching(event.type),
            *(r for r in subscription_routes(known) if r.matches(event.type)),
        ]
        planned: dict[str, Planned] = {}
        for route in routes:
            failed = route.failed_condition(event.payload)
            verdict = Planned(route.handler, f"condition {failed.describe()}" if failed else None)
            current = planned.get(route.handler)
            if current is None or (current.skipped_by and not verdict.skipped_by):
                planned[route.handler] = verdict
        return list(planned.values())

    def dispatch(
        self, event: Event, subscriptions: list[dict[str, Any]] | None = None
    ) -> list[Planned]:
        """Record and enqueue one delivery per matching handler, then clear ``pending``.

        Dispatching twice (the publisher and a sweeper, or a sweeper after a partial
        dispatch) enqueues each delivery once: only a delivery no dispatch recorded yet,
        or one whose enqueue failed, is enqueued.
        """
        outcome = self.dispatch_many([event], subscriptions)[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def dispatch_many(
        self, events: list[Event], subscriptions: list[dict[str, Any]] | None = None
    ) -> list[list[Planned] | Exception]:
        """Dispatch several events as :meth:`dispatch` does each, in a few round trips.

        The deliveries of all the events are recorded in one round trip, enqueued in one
        broker batch, and the events cleared from ``pending`` in one more. An event that
        could not be dispatched gets its exception in its place, and stays ``pending``.

        A delivery is recorded as not yet sent (``enqueue_failed``) and cleared once
        the broker took its message: a dispatch that fails or dies half-way leaves every
        delivery it did not send to the sweeper, which enqueues it under a new task id
        (a message that did go out is then refused as superseded).
        """
        enqueuer = self._enqueuer()
        known = self.subscriptions() if subscriptions is None else subscriptions
        plans = [self.plan(event, known) for event in events]
        changes: list[tuple[int, Change]] = []
        for index, (event, planned) in enumerate(zip(events, plans, strict=True)):
            for item in planned:
                if item.skipped_by:
                    change = Change(
                        event.id, item.handler, "plan_skip", Status.SKIPPED, item.skipped_by
                    )
                else:
                    change = Change(
                        event.id,
                        item.handler,
                        "dispatch",
                        Status.QUEUED,
                        "dispatched",
                        task_id=uuid.uuid4().hex,
                        options={"enqueue_failed": True, "only_unsent": True},
                    )
                changes.append((index, change))
        outcomes: list[list[Planned] | Exception] = list(plans)
        recorded = self.deliveries.apply_many([change for _, change in changes])
        to_enqueue: list[tuple[int, Change]] = []
        for (index, change), result in zip(changes, recorded, strict=True):
            if isinstance(result, Exception):
                outcomes[index] = result
            elif change.target is Status.QUEUED and result.ok:
                to_enqueue.append((index, change))
        sent: list[tuple[str, str, str]] = []
        try:
            enqueuer.deliver_many([(events[i], c.handler, c.task_id) for i, c in to_enqueue])
            sent = [(c.event_id, c.handler, c.task_id) for _, c in to_enqueue]
        except Exception as exc:
            self._enqueue_failed(exc, to_enqueue, outcomes)
        done = [(events[i], o) for i, o in enumerate(outcomes) if not isinstance(o, Exception)]
        self.store.mark_dispatched_many(
            [(event.id, None if planned else "unrouted") for event, planned in done],
            "no route or subscription matches",
            sent=sent,
        )
        return outcomes

    def _enqueue_failed(
        self,
        exc: Exception,
        to_enqueue: list[tuple[int, Change]],
        outcomes: list[list[Planned] | Exception],
    ) -> None:
        """Say why on each delivery the broker may not have; their events stay pending.

        Some messages may have gone out before the failure: a delivery a worker already
        started evidently did, and its event counts as dispatched.
        """
        waiting = self.deliveries.apply_many(
            [
                Change(
                    c.event_id,
                    c.handler,
                    "unsent",
                    Status.QUEUED,
                    f"enqueue failed, will be swept: {logs.error_summary(exc)}",
                    task_id=c.task_id,
                    options={"enqueue_failed": True},
                )
                for _, c in to_enqueue
            ]
        )
        for (index, _), result in zip(to_enqueue, waiting, strict=True):
            if isinstance(result, Exception) or result.ok:
                outcomes[index] = exc

    def sweep(self) -> int:
        """Dispatch events left ``pending`` past the grace period; each by one sweeper only.

        One event that cannot be dispatched does not hold up the others: its lease runs
        out and a later sweep tries it again.
        """
        dispatched = 0
        relayed = self._relay_holds()
        for event_id in self.store.pending(self.settings.outbox_grace):
            if event_id in relayed:
                continue  # a live relay has it in its queue: dispatching it too is waste
            if not self.store.claim_pending(event_id, lease=max(60.0, self.settings.outbox_grace)):
                continue
            try:
                self.dispatch(self.store.get(event_id).event)
            except NotFound:
                continue
            except Exception as exc:
                log.warning(
                    "sweep could not dispatch: %s",
                    logs.error_summary(exc),
                    extra={"event_id": event_id},
                )
                continue
            dispatched += 1
        return dispatched

    def _relay_holds(self) -> set[str]:
        """Ids still in the relay's queue, when a relay is alive to take them (else none)."""
        if not self.liveness.alive("relay"):
            return set()
        with reaching_redis():
            return {str(x) for x in self.redis.lrange(self.keys.dispatch, 0, -1)}

    def relay_state(self) -> dict[str, Any]:
        """The relay's queue: its length, the age of its oldest event, the relays alive."""
        with reaching_redis():
            length = int(self.redis.llen(self.keys.dispatch))
            oldest = self.redis.lindex(self.keys.dispatch, 0)
            stored_at = self.redis.zscore(self.keys.pending, oldest) if oldest else None
        age = max(0.0, time.time() - float(stored_at) / 1000) if stored_at else 0.0
        return {
            "queue": length,
            "oldest_age_s": round(age, 3),
            "alive": self.liveness.alive("relay"),
        }

    def recover(self) -> int:
        """Send held deliveries that are due, and re-enqueue those stuck past the grace
        period (see ``eda/recovery.py``); how many were recovered."""
        from eda.recovery import recover, send_held

        try:
            send_held(self)
        except Exception as exc:  # held deliveries wait for the next pass; recovery goes on
            log.warning("held deliveries not sent this pass: %s", logs.error_summary(exc))
        return len(recover(self, self._enqueuer().waiting_task_ids()))

    def send_held(self) -> int:
        """Send the held deliveries (long retries and waits) that are due; how many."""
        from eda.recovery import send_held

        return send_held(self)

    # -- dead letters and retries -----------------------------------------------------------

    def dead_letter_list(
        self, limit: int = 50, event_type: str | None = None, handler: str | None = None
    ) -> list[DeadLetter]:
        return self.dead_letters.newest(limit, event_type, handler)

    def dead_letter_page(
        self, limit: int = 50, event_type: str | None = None, handler: str | None = None
    ) -> DeadLetterPage:
        """The newest ``limit`` matching dead letters, and how many more match beyond them."""
        return self.dead_letters.page(limit, event_type, handler)

    def dead_letter(self, dead_letter_id: str) -> DeadLetter:
        return self.dead_letters.get(dead_letter_id)

    def retry_dead_letter(self, dead_letter_id: str) -> dict[str, Any]:
        """Queue a fresh delivery with a fresh retry budget, taking the dead letter in that step."""
        letter = self.dead_letters.get(dead_letter_id)
        retried = self._retry_letters([letter])
        if not retried:
            raise NotFound("event_id", f"no event {letter.event_id!r} is stored")
        return retried[0]

    def retry_dead_letters(
        self,
        event_type: str | None = None,
        handler: str | None = None,
        limit: int = 1000,
        progress: Progress | None = None,
        *,
        until_empty: bool = False,
    ) -> RetryReport:
        """Retry a filtered batch of dead letters, paced by ``replay_rate``.

        The letters are retried in batches (:meth:`_redeliver_many`): each batch's new
        runs, which take their letters, are recorded in one pipeline and their messages
        sent in one broker batch. A letter whose event retention took is left in the
        queue. ``until_empty`` goes on, batch after batch of ``limit``, until no matching
        letter is left that this call has not retried already (a delivery that dies
        again comes back as a new letter, and is left for the next call). Ctrl-C
        stops between two batches; the report says what was done.
        """
        report = RetryReport()
        # Keyed on the letter alone: a retried delivery that dies again leaves a letter of
        # the same id (with a new task id), and retrying it again in this call never ends.
        seen: set[str] = set()
        try:
            while True:
                letters = self.dead_letters.newest(limit, event_type, handler, skip=seen)
                seen.update(letter.id for letter in letters)
                report.retried.extend(self._paced(letters, self._retry_letters, progress))
                if not until_empty or not letters:
                    break
        except KeyboardInterrupt:
            report.interrupted = True
        report.left = self.dead_letters.count(event_type, handler)
        return report

    def _retry_letters(self, letters: list[DeadLetter]) -> list[dict[str, Any]]:
        """Queue a fresh delivery for each letter, taking the letter in that step; those
        whose event is no longer stored are passed over."""
        events = self.store.events([letter.event_id for letter in letters])
        found = [letter for letter in letters if letter.event_id in events]
        reason = "retried from the dead-letter queue"
        work = [(events[x.event_id], x.handler, x.task_id) for x in found]
        retried = [
            {"dead_letter_id": x.id, "event_id": x.event_id, "handler": x.handler, "task_id": t}
            for x, t in zip(found, self._redeliver_many(work, reason), strict=True)
            if t is not None
        ]
        metrics.dead_letters("retried", len(retried))
        return retried

    def discard_dead_letter(self, dead_letter_id: str, reason: str) -> DeadLetter:
        """Drop a dead letter for good, recording who said so and why on the delivery."""
        if not reason.strip():
            raise InvalidInput("reason", "say why the dead letter is discarded")
        letter = self.dead_letters.get(dead_letter_id)
        with contextlib.suppress(NotFound):  # a trimmed event's letter still goes
            self.deliveries.apply(
                Change(
                    letter.event_id, letter.handler, "discard", Status.DEAD, f"discarded: {reason}"
                )
            )
        self.dead_letters.remove(dead_letter_id)
        metrics.dead_letters("discarded")
        return letter

    def annotate_dead_letter(
        self, dead_letter_id: str, reason: str, *, by: str, category: str = ""
    ) -> DeadLetter:
        """Note on a dead letter who judged it and why (``eda dlq show`` shows it)."""
        if not reason.strip():
            raise InvalidInput("reason", "say what was judged")
        note = {"by": by, "reason": reason[:500], "category": category, "at": now_iso()}
        if not self.dead_letters.annotate(dead_letter_id, note):
            raise NotFound("dead_letter_id", f"no dead letter {dead_letter_id!r}")
        return self.dead_letters.get(dead_letter_id)

    # -- destinations -----------------------------------------------------------------------

    def destinations(self) -> list[dict[str, Any]]:
        """The destinations the routes declare, each with why it is disabled (or None)."""
        disabled = DisabledDestinations(self.redis, self.keys).all()
        names = dict.fromkeys(r.handler for r in self.routes.routes if r.destination is not None)
        return [{"handler": name, "disabled": disabled.get(name)} for name in names]

    def enable_destination(self, handler: str) -> bool:
        """Let a destination a 410 disabled receive deliveries again; False if it was not."""
        if handler not in {item["handler"] for item in self.destinations()}:
            raise NotFound("destination", f"no destination {handler!r} in the routes")
        return DisabledDestinations(self.redis, self.keys).enable(handler)

    def retry_event(self, event_id: str) -> list[dict[str, Any]]:
        """Retry every dead delivery of one event (from the DLQ where it is there)."""
        stored = self.store.get(event_id)
        work = [
            (stored.event, handler, str(delivery.get("task_id", "")))
            for handler, delivery in stored.deliveries.items()
            if delivery.get("status") == "dead"
        ]
        if not work:
            raise InvalidInput("event_id", f"event {event_id!r} has no failed deliveries to retry")
        task_ids = self._redeliver_many(work, "retried by an operator")
        return [
            {"event_id": event_id, "handler": handler, "task_id": task_id}
            for (_, handler, _), task_id in zip(work, task_ids, strict=True)
            if task_id is not None
        ]

    # -- replay -----------------------------------------------------------------------------

    def replay(
        self,
        event_type: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int = 1000,
        handler: str | None = None,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> ReplayReport:
        """Re-dispatch stored events, keeping their ids and lineage, at a bounded rate.

        Replayed deliveries are marked ``replay`` and run even where the delivery
        already succeeded; each gets a new run, and takes the delivery's dead letter
        if it has one. They are sent in batches, as the relay
        sends (:meth:`_redeliver_many`). A dry run says what would be replayed and
        enqueues nothing.
        """
        if event_type is not None:
            Event.create(type=event_type, source="replay")
        if not 1 <= limit <= 100_000:
            raise InvalidInput("limit", "must be between 1 and 100000")
        if handler is not None:
            self.check_handler(handler, "handler")
        work: list[tuple[Event, str]] = []
        events = matched = 0
        next_since = None
        subscriptions = self.subscriptions()
        for stream_id, event in self.store.scan_events(event_type, since, until):
            if handler is not None:
                handlers = [handler]
            else:
                handlers = [p.handler for p in self.plan(event, subscriptions) if not p.skipped_by]
            if not handlers:
                continue
            matched += 1
            if events < limit:
                events += 1
                work.extend((event, h) for h in handlers)
            elif next_since is None:
                next_since = stream_id
        report = ReplayReport(
            dry_run=dry_run, events=events, matched=matched, next_since=next_since
        )
        if dry_run:
            report.items = [{"event_id": e.id, "type": e.type, "handler": h} for e, h in work]
            report.deliveries = len(work)
            return report
        try:
            for item in self._paced(work, self._replay_batch, progress):
                report.items.append(item)
                report.deliveries += 1
        except KeyboardInterrupt:
            report.interrupted = True
        return report

    def _replay_batch(self, work: list[tuple[Event, str]]) -> list[dict[str, Any]]:
        """Replay these deliveries; those whose event retention took are passed over.

        A replayed delivery that was dead takes its dead letter in the same step, as a
        retry does: the letter's delivery is running again, and a later retry of the
        letter would run it twice.
        """
        redelivered = [(e, h, "") for e, h in work]
        task_ids = self._redeliver_many(redelivered, "replayed", replay=True)
        return [
            {"event_id": event.id, "type": event.type, "handler": handler, "task_id": task_id}
            for (event, handler), task_id in zip(work, task_ids, strict=True)
            if task_id is not None
        ]

    # -- stats ------------------------------------------------------------------------------

    def stats(self, sample: int = 1000) -> dict[str, Any]:
        """Events per type and status and per status alone (over the newest ``sample``;
        ``blocked`` and ``stopped`` among them), lanes, DLQ size, the relay's queue, the
        live workers, and deliveries stuck past the recovery grace by status."""
        by_type: dict[str, dict[str, int]] = {}
        by_status: dict[str, int] = {}
        for event_type, status in self.store.types_and_statuses(
            self.store.history_ids(limit=sample)
        ):
            counts = by_type.setdefault(event_type, {})
            counts[status] = counts.get(status, 0) + 1
            by_status[status] = by_status.get(status, 0) + 1
        with reaching_redis():
            length = int(self.redis.xlen(self.keys.stream))
            pending = int(self.redis.zcard(self.keys.pending))
        from eda.recovery import stuck_counts

        waiting = self.enqueuer.waiting_task_ids() if self.enqueuer else None
        return {
            "events": by_type,
            "statuses": dict(sorted(by_status.items())),
            "stored": length,
            "pending": pending,
            "dead_letters": self.dead_letters.count(),
            "lanes": self.enqueuer.queue_lengths() if self.enqueuer else {},
            "relay": self.relay_state(),
            "workers": self.liveness.alive("worker"),
            "stuck": stuck_counts(self, waiting),
            "flow": self.flow_state(),
            "unconsumed_types": self.unconsumed_types(),
        }

    def unconsumed_types(self) -> list[str]:
        """The types agents may publish that no route or subscription sends to a handler."""
        published = self.handlers.published_types() if self.handlers is not None else []
        return unrouted(
            published, [*self.routes.routes, *subscription_routes(self.subscriptions())]
        )

    def flow_state(self) -> dict[str, Any]:
        """Concurrency slots in use and deliveries parked per scope, deliveries waiting per
        handler and what for, and each budget's use."""
        from eda.flow import waiting

        budgets = {}
        for name in self.handlers.names() if self.handlers is not None else []:
            rules = self.handlers.flow(name) if self.handlers is not None else None
            if rules is not None and rules.budget is not None:
                spent = self.flow.spent(name)
                budgets[name] = {
                    "spent": spent.tokens,
                    "tokens_per_day": rules.budget.tokens_per_day,
                    "cost": round(spent.cost, 6),
                    "cost_per_day": rules.budget.cost_per_day,
                }
        return {"concurrency": self.flow.in_use(), "waiting": waiting(self), "budgets": budgets}

    # -- plumbing ---------------------------------------------------------------------------

    def _enqueuer(self) -> Enqueuer:
        if self.enqueuer is None:
            raise NoBroker("no broker is configured for dispatching (use tasks.connect())")
        return self.enqueuer

    def _redeliver_many(
        self, work: Sequence[tuple[Event, str, str | None]], reason: str, *, replay: bool = False
    ) -> list[str | None]:
        """Queue deliveries afresh (a new run each, a fresh retry budget) and enqueue them,
        in the relay's few round trips: one pipeline records every new run, one broker
        batch sends every message. The task id of each, None where the event is no
        longer stored.

        ``work``: (event, handler, letter_of); ``letter_of`` (a retry from the
        dead-letter queue) makes the same step take the delivery's dead letter, if that
        task left it ("" whichever). When the broker refuses the batch, every delivery
        of it goes back to the status it had, with the letter it had: nothing new will
        run, and the error is raised. A message that went out before the refusal is then
        refused by its worker (the delivery is no longer queued). A process killed
        between the two steps leaves queued deliveries without a message: recovery
        sends them after its grace period (``eda/recovery.py``).

        Against one step and one ``apply_async`` per delivery, counted with redis-py's
        sends (store and broker together): a replay of 200 no-op deliveries took 603
        round trips and 1.5-1.7 ms of CPU a delivery, now 7 and 0.6-0.7 ms; a retry of
        200 dead letters 1,003 and 1.9-2.4 ms, now 8 and 0.5-0.7 ms. Raw Celery's
        ``apply_async`` (the bench's baseline) costs 0.6-0.8 ms and a round trip a
        message.
        """
        enqueuer = self._enqueuer()
        changes = []
        for event, handler, letter_of in work:
            options: dict[str, Any] = {"new_run": True, "replay": replay}
            if letter_of is not None:
                options["take_letter"] = letter_of
            task_id = uuid.uuid4().hex
            changes.append(
                Change(event.id, handler, "requeue", Status.QUEUED, reason, task_id, options)
            )
        applied = self.deliveries.apply_many(changes)
        for result in applied:
            if isinstance(result, Exception) and not isinstance(result, NotFound):
                raise result
        queued = [
            (event, change, result)
            for (event, _, _), change, result in zip(work, changes, applied, strict=True)
            if isinstance(result, Applied)
        ]
        try:
            enqueuer.deliver_many([(e, c.handler, c.task_id) for e, c, _ in queued], replay=replay)
        except Exception as exc:
            failure = f"could not enqueue: {logs.error_summary(exc)}"
            self.deliveries.apply_many(
                [reverting(r, c.event_id, c.handler, c.task_id, failure) for _, c, r in queued]
            )
            raise
        return [
            c.task_id if isinstance(r, Applied) else None
            for c, r in zip(changes, applied, strict=True)
        ]

    def _paced(
        self,
        items: list[Any],
        action: Callable[[list[Any]], list[Any]],
        progress: Progress | None,
    ) -> Iterator[Any]:
        """Run ``action`` on ``items`` in batches, at ``replay_rate`` items per second.

        A batch holds what the pace allows in :data:`REDELIVER_SLICE` seconds (at most
        :data:`REDELIVER_BATCH`): a slow pace stays even, and Ctrl-C stops soon.
        """
        rate = self.settings.replay_rate
        size = max(1, min(REDELIVER_BATCH, int(rate * REDELIVER_SLICE)))
        started = time.monotonic()
        for start in range(0, len(items), size):
            batch = items[start : start + size]
            yield from action(batch)
            done = start + len(batch)
            if progress:
                progress(done, len(items))
            delay = started + done / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
