"""The event store: events, their history and their deliveries, in Redis.

Publishing is one Lua script (``lua/publish.lua``); each step of a delivery is
another (``lua/delivery.lua``, driven by ``eda/delivery.py``), which also
re-derives the event's status. Reads go through pipelines, one round trip each.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pydantic_core
import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from eda import lua
from eda.delivery import MAX_REASON, Delivery
from eda.errors import InvalidInput, NotFound, reaching_redis
from eda.event import Event
from eda.keys import Keys
from eda.settings import Settings
from eda.times import now_iso
from eda.together import Together

#: Statuses an operator may set on an event by hand with acknowledge.
ACK_STATUSES = ("processed", "ignored", "failed", "succeeded")
#: One call of a Lua script: the script, its keys, its arguments.
ScriptCall = tuple[Script, list[str], list[Any]]


@dataclass(frozen=True)
class Published:
    """What publishing returned: the event id, its stream id, and whether it was a duplicate."""

    event_id: str
    stream_id: str
    duplicate: bool
    #: Why the event was stored but not dispatched (a runaway chain), "" when it was not.
    blocked: str = ""


@dataclass
class StoredEvent:
    """An event with what the store knows about it."""

    event: Event
    status: str
    stream_id: str
    deliveries: dict[str, dict[str, Any]] = field(default_factory=dict)
    acknowledged: dict[str, Any] | None = None
    #: Why the event was not dispatched (its chain ran away), when it was blocked.
    blocked: str | None = None
    #: How many events caused it (0: a root, such as a webhook's).
    depth: int = 0

    def as_dict(self, *, with_deliveries: bool = True) -> dict[str, Any]:
        data = json.loads(self.event.to_json())
        data["status"] = self.status
        data["stream_id"] = self.stream_id
        if self.acknowledged:
            data["acknowledged"] = self.acknowledged
        if self.blocked:
            data["blocked"] = self.blocked
        if self.depth:
            data["depth"] = self.depth
        if with_deliveries:
            data["deliveries"] = list(self.deliveries.values())
        return data


@dataclass
class Taken:
    """What a relay took for one batch (:meth:`EventStore.take_dispatch`)."""

    #: The ids taken off the dispatch queue, oldest first.
    ids: list[str] = field(default_factory=list)
    #: The events among them still waiting for dispatch (the others were dispatched first).
    pending: list[Event] = field(default_factory=list)
    #: The subscriptions as stored (JSON), read in the same step.
    subscriptions: list[str] = field(default_factory=list)


class Scripts:
    """The Lua scripts of the store, registered once per client."""

    def __init__(self, client: redis.Redis) -> None:
        self.publish = lua.load(client, "publish")
        self.delivery = lua.load(client, "delivery")
        self.claim = lua.load(client, "claim")
        self.set_status = lua.load(client, "set_status")
        self.sent = lua.load(client, "sent")
        self.journal = lua.load(client, "journal")
        self.take = lua.load(client, "take")


def stream_bound(value: datetime | str | None, *, upper: bool) -> str:
    """A history bound as a stream id: a datetime becomes its millisecond, '-'/'+' when open."""
    if value is None:
        return "+" if upper else "-"
    if isinstance(value, str):
        return value
    millis = max(0, int(value.timestamp() * 1000))  # stream ids start at the epoch
    return f"{millis}-{'18446744073709551615' if upper else '0'}"


class EventStore:
    """Events, history and delivery records for one key prefix."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self.keys = Keys(settings.prefix)
        self.scripts = Scripts(client)
        #: Events published while another's round trip is under way go in the next.
        self._publishing = Together(self._publish_batch)

    # -- publishing -------------------------------------------------------------------------

    def publish(self, event: Event, *, notify: bool = False) -> Published:
        """Store an event atomically with status ``pending``.

        With ``notify`` the same write hands the event to the workers' dispatchers
        (:meth:`take_dispatch`), so the caller need not dispatch it itself.
        A dedupe key already seen returns the original event's id and writes nothing.
        Raises InvalidInput for a payload over the size limit, StoreUnavailable when
        Redis cannot be reached.
        """
        document = event.to_json()
        size = len(pydantic_core.to_json(event.payload))  # as stored: compact UTF-8
        if size > self.settings.max_payload_bytes:
            raise InvalidInput(
                "payload", f"is {size} bytes, at most {self.settings.max_payload_bytes} allowed"
            )
        keys = self.keys
        try:
            reply = self._publishing.run(
                (
                    self.scripts.publish,
                    [
                        keys.dedupe(event.dedupe_key or ""),
                        keys.stream,
                        keys.type_stream(event.type),
                        keys.event(event.id),
                        keys.pending,
                        keys.dispatch,
                        keys.chain(event.correlation_id or ""),
                        keys.event(event.causation_id or ""),
                    ],
                    [
                        event.id,
                        document,
                        event.type,
                        self.settings.dedupe_ttl,
                        self.settings.stream_maxlen,
                        int(time.time() * 1000),
                        "1" if event.dedupe_key else "0",
                        keys.event_prefix,
                        keys.deliveries_prefix,
                        keys.outcomes_prefix,
                        "1" if notify else "0",
                        keys.journal_prefix,
                        "1" if event.causation_id else "0",
                        "1" if event.correlation_id else "0",
                        self.settings.max_causation_depth,
                        self.settings.chain_budget,
                        event.source,
                        event.timestamp,
                    ],
                )
            )
        except redis.ResponseError as exc:
            if str(exc).startswith("EXISTS"):  # an ingested event that kept its own id
                raise InvalidInput("id", f"an event {event.id!r} is already stored") from None
            raise
        event_id, stream_id, duplicate, blocked = reply
        return Published(str(event_id), str(stream_id), bool(int(duplicate)), str(blocked))

    # -- reading ----------------------------------------------------------------------------

    def get(self, event_id: str) -> StoredEvent:
        """One event with its deliveries; NotFound when no such event is stored."""
        found = self.get_many([event_id])
        if not found:
            raise NotFound("event_id", f"no event {event_id!r} is stored")
        return found[0]

    def event(self, event_id: str) -> Event:
        """The event alone, without its deliveries (one read); NotFound when not stored."""
        with reaching_redis():
            data = self.redis.hget(self.keys.event(event_id), "data")
        if data is None:
            raise NotFound("event_id", f"no event {event_id!r} is stored")
        return Event.from_json(data)

    def get_many(self, event_ids: Iterable[str]) -> list[StoredEvent]:
        """The stored events among these ids, in order, in one round trip."""
        ids = list(event_ids)
        pipe = self.redis.pipeline(transaction=False)
        for event_id in ids:
            pipe.hgetall(self.keys.event(event_id))
            pipe.hgetall(self.keys.deliveries(event_id))
            pipe.hgetall(self.keys.outcomes(event_id))
        replies = self.execute(pipe)
        found = []
        for index in range(len(ids)):
            record, deliveries, outcomes = replies[3 * index : 3 * index + 3]
            if record:
                found.append(_stored(record, deliveries, outcomes))
        return found

    def types_and_statuses(self, event_ids: list[str]) -> list[tuple[str, str]]:
        """(type, status) of the stored events among these ids, in one round trip: two
        fields of each record, never its payload or its deliveries. A record stored
        before it kept its type apart is read whole."""
        pipe = self.redis.pipeline(transaction=False)
        for event_id in event_ids:
            pipe.hmget(self.keys.event(event_id), "type", "status", "sid")
        found = []
        for event_id, (event_type, status, stream_id) in zip(
            event_ids, self.execute(pipe), strict=True
        ):
            if event_type is not None:
                found.append((str(event_type), str(status or "pending")))
            elif stream_id is not None:  # else retention took it
                found.extend((s.event.type, s.status) for s in self.get_many([event_id]))
        return found

    def events(self, event_ids: list[str]) -> dict[str, Event]:
        """The stored events among these ids, by id, in one round trip (the events alone,
        not their deliveries)."""
        pipe = self.redis.pipeline(transaction=False)
        for event_id in event_ids:
            pipe.hget(self.keys.event(event_id), "data")
        found = (Event.from_json(data) for data in self.execute(pipe) if data)
        return {event.id: event for event in found}

    def history(
        self,
        event_type: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int = 100,
        newest_first: bool = True,
    ) -> list[StoredEvent]:
        """Stored events by type and time window (stream ids are the time bounds)."""
        return self.get_many(self.history_ids(event_type, since, until, limit, newest_first))

    def history_ids(
        self,
        event_type: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int = 100,
        newest_first: bool = True,
    ) -> list[str]:
        """The ids of :meth:`history`'s events, read from the stream alone.

        Raises InvalidInput naming ``type``, ``limit`` or ``since/until`` when out of range.
        """
        if event_type is not None:
            Event.create(type=event_type, source="history")  # the same rule as on publish
        if not 1 <= limit <= 10_000:
            raise InvalidInput("limit", "must be between 1 and 10000")
        stream = self.keys.type_stream(event_type) if event_type else self.keys.stream
        low, high = stream_bound(since, upper=False), stream_bound(until, upper=True)
        entries: list[Any]
        try:
            with reaching_redis():
                if newest_first:
                    entries = self.redis.xrevrange(stream, high, low, count=limit)  # type: ignore[assignment]
                else:
                    entries = self.redis.xrange(stream, low, high, count=limit)  # type: ignore[assignment]
        except redis.ResponseError as exc:
            raise InvalidInput("since/until", str(exc)) from None
        return [str(fields["id"]) for _, fields in entries]

    def scan_events(
        self,
        event_type: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        batch: int = 500,
    ) -> Iterator[tuple[str, Event]]:
        """Every stored event in the window with its stream id, oldest first, read in
        batches (the events alone: a replay needs no delivery records)."""
        low = stream_bound(since, upper=False)
        high = stream_bound(until, upper=True)
        stream = self.keys.type_stream(event_type) if event_type else self.keys.stream
        while True:
            with reaching_redis():
                entries: list[Any] = self.redis.xrange(stream, low, high, count=batch)  # type: ignore[assignment]
            events = self.events([fields["id"] for _, fields in entries])
            for stream_id, fields in entries:
                if fields["id"] in events:
                    yield stream_id, events[fields["id"]]
            if len(entries) < batch:
                return
            low = "(" + entries[-1][0]

    def mark_dispatched_many(
        self,
        events: list[tuple[str, str | None]],
        reason: str = "",
        sent: Sequence[tuple[str, str, str]] = (),
    ) -> None:
        """Clear events from ``pending``, in one pipeline: (event id, own status or None).

        An event's own status is set when no delivery derives one (``unrouted``). An
        event with a delivery that a dispatch recorded but no broker is known to have
        taken (``enqueue_failed``) stays pending, for the sweeper.

        ``sent`` are the (event id, handler, task id) deliveries whose messages the
        broker took: their ``enqueue_failed`` flag, set when they were recorded, is
        cleared first. An event no longer stored (retention took it) is passed over.
        """
        if not events and not sent:
            return
        calls: list[ScriptCall] = [
            (self.scripts.sent, [self.keys.deliveries(event_id)], [handler, task_id])
            for event_id, handler, task_id in sent
        ]
        for event_id, status in events:
            pairs = ["status", status, "reason", reason] if status is not None else []
            keys = [self.keys.event(event_id), self.keys.pending, self.keys.deliveries(event_id)]
            calls.append((self.scripts.set_status, keys, [event_id, "1", *pairs]))
        for reply in self.run_scripts(calls):
            if isinstance(reply, Exception):
                raise reply

    def mark_undispatched(self, event_id: str, reason: str) -> None:
        """Say that an event is still waiting for dispatch (it stays in ``pending``)."""
        self._set_status(event_id, {"status": "pending", "reason": reason[:MAX_REASON]})

    def acknowledge(self, event_id: str, status: str = "processed", reason: str = "") -> str:
        """Set an event's status by hand; it then stays until acknowledged again."""
        if status not in ACK_STATUSES:
            raise InvalidInput("status", f"{status!r} is not one of {', '.join(ACK_STATUSES)}")
        ack = json.dumps({"status": status, "reason": reason[:MAX_REASON], "at": now_iso()})
        return self._set_status(event_id, {"status": status, "ack": ack}, clear_pending=True)

    def _set_status(
        self, event_id: str, fields: dict[str, str], *, clear_pending: bool = False
    ) -> str:
        """Set fields of an existing event record; NotFound when retention took it."""
        pairs = [part for item in fields.items() for part in item]
        previous = self.run_script(
            self.scripts.set_status,
            keys=[self.keys.event(event_id), self.keys.pending, self.keys.deliveries(event_id)],
            args=[event_id, "1" if clear_pending else "0", *pairs],
        )
        if previous is None:
            raise NotFound("event_id", f"no event {event_id!r} is stored")
        return str(previous)

    def pending(self, older_than: float, limit: int = 500) -> list[str]:
        """Ids of events stored but not dispatched for at least ``older_than`` seconds."""
        cutoff = int((time.time() - older_than) * 1000)
        with reaching_redis():
            ids = self.redis.zrangebyscore(self.keys.pending, "-inf", cutoff, start=0, num=limit)
        return [str(i) for i in ids]

    def take_dispatch(
        self, limit: int, wait: float, *, block: bool = True, wake: str = ""
    ) -> Taken:
        """Up to ``limit`` events handed to the dispatchers, oldest first, with what a
        batch needs to dispatch them (``lua/take.lua``).

        Each id goes to one caller only; an id taken by a process that dies before
        dispatching stays ``pending``, for the sweeper. ``block`` waits first (up to
        ``wait`` seconds) for an id, then takes the rest: two round trips. Without it
        (the last batch was full: more is likely waiting) the batch is taken in one,
        and only an empty queue is then waited on. A wait ends, with nothing taken, when
        :meth:`wake_dispatcher` names ``wake`` (a relay's name).
        """
        if not block:
            taken = self._take(limit, [])
            if taken.ids:
                return taken
        lists = [self.keys.dispatch, *([self.keys.dispatch_wake(wake)] if wake else [])]
        with reaching_redis():
            first: Any = self.redis.blpop(lists, timeout=wait)
        if not first or str(first[0]) != self.keys.dispatch:
            return Taken()
        return self._take(limit, [str(first[1])])

    def wake_dispatcher(self, name: str) -> None:
        """End the wait of the dispatcher ``take_dispatch`` names ``name`` (it stops); the
        word is gone within a minute if it waits no more."""
        key = self.keys.dispatch_wake(name)
        pipe = self.redis.pipeline(transaction=False)
        pipe.rpush(key, "stop")
        pipe.expire(key, 60)
        with reaching_redis():
            pipe.execute()

    def _take(self, limit: int, taken: list[str]) -> Taken:
        ids, pending, subscriptions = self.run_script(
            self.scripts.take,
            keys=[self.keys.dispatch, self.keys.subscriptions],
            args=[limit, self.keys.event_prefix, *taken],
        )
        return Taken(
            [str(x) for x in ids],
            [Event.from_json(data) for data in pending],
            [str(x) for x in subscriptions],
        )

    def claim_pending(self, event_id: str, lease: float) -> bool:
        """Take a pending event for dispatch: True for exactly one of several sweepers."""
        now = time.time()
        claimed = self.run_script(
            self.scripts.claim,
            keys=[self.keys.pending],
            args=[event_id, int(now * 1000), int((now + lease) * 1000)],
        )
        return bool(claimed)

    # -- plumbing ---------------------------------------------------------------------------

    def run_scripts(self, calls: list[ScriptCall]) -> list[Any]:
        """Run many script calls in one pipeline: each reply, or its error, in its place.

        redis-py would first ask whether a pipeline's scripts are loaded (SCRIPT EXISTS),
        a round trip on every execute. Each call is sent as a plain EVALSHA instead; a
        server that does not have a script (NOSCRIPT: that call did nothing) gets it
        loaded, and those calls are sent once more, in their order.
        """
        replies = self._evalsha_many(calls)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            with reaching_redis():
                for script in {id(calls[i][0]): calls[i][0] for i in missing}.values():
                    script.sha = self.redis.script_load(script.script)
            again = self._evalsha_many([calls[i] for i in missing])
            for index, reply in zip(missing, again, strict=True):
                replies[index] = reply
        return replies

    def _evalsha_many(self, calls: list[ScriptCall]) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        with reaching_redis():
            return list(pipe.execute(raise_on_error=False))

    def _publish_batch(self, calls: list[ScriptCall]) -> list[Any]:
        """Publish calls of concurrent callers (:mod:`eda.together`): one alone as a plain
        EVALSHA, several in one pipeline, each error as :func:`reaching_redis` says."""
        if len(calls) == 1:
            return [self.run_script(*calls[0])]
        return [_translated(reply) for reply in self.run_scripts(calls)]

    def run_script(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """One script call, alone (cheaper than a pipeline of one); its errors are raised.

        A plain EVALSHA, loading the script when the server lacks it (NOSCRIPT: that call
        did nothing): redis-py's ``Script.__call__`` does the same and more per call.
        """
        with reaching_redis():
            try:
                return self.redis.evalsha(script.sha, len(keys), *keys, *args)
            except NoScriptError:
                script.sha = self.redis.script_load(script.script)
                return self.redis.evalsha(script.sha, len(keys), *keys, *args)

    def execute(self, pipe: Any) -> list[Any]:
        with reaching_redis():
            return list(pipe.execute())


def _translated(reply: Any) -> Any:
    """A pipeline's reply; an error reply as it would have been raised alone."""
    if not isinstance(reply, redis.RedisError):
        return reply
    try:
        with reaching_redis():
            raise reply
    except Exception as exc:
        return exc


def _shown(handler: str, raw: str, outcomes: dict[str, str]) -> dict[str, Any]:
    """A delivery as the faces show it; a record that cannot be read says so, alone."""
    try:
        return Delivery.parse(raw, outcomes, handler).as_dict()
    except (ValueError, KeyError, TypeError) as exc:
        return {
            "handler": handler,
            "status": "unreadable",
            "error": f"the delivery record cannot be read: {type(exc).__name__}",
        }


def _stored(
    record: dict[str, str], deliveries: dict[str, str], outcomes: dict[str, str]
) -> StoredEvent:
    by_handler = {
        handler: _shown(handler, raw, outcomes) for handler, raw in sorted(deliveries.items())
    }
    return StoredEvent(
        event=Event.from_json(record["data"]),
        status=record.get("status", "pending"),
        stream_id=record.get("sid", ""),
        deliveries=by_handler,
        acknowledged=json.loads(record["ack"]) if "ack" in record else None,
        blocked=record.get("blocked"),
        depth=int(record.get("depth", 0)),
    )
