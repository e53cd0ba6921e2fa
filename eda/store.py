"""The event store: events, their history and their deliveries, in Redis.

Publishing is one Lua script (``lua/publish.lua``); a delivery's status change
is another (``lua/transition.lua``), which also re-derives the event's status.
Reads go through pipelines, one round trip each.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydantic_core
import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from eda.errors import InvalidInput, NotFound, StoreUnavailable
from eda.event import Event
from eda.keys import Keys
from eda.settings import Settings

#: Statuses a delivery (event x handler) moves through.
DELIVERY_STATUSES = ("queued", "running", "retrying", "succeeded", "skipped", "dead")
#: Statuses an operator may set on an event by hand with acknowledge.
ACK_STATUSES = ("processed", "ignored", "failed", "succeeded")
#: Longest reason kept with a status change.
MAX_REASON = 500
#: One call of a Lua script: the script, its keys, its arguments.
ScriptCall = tuple[Script, list[str], list[Any]]


def now_iso() -> str:
    """The current time as RFC 3339 UTC with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Published:
    """What publishing returned: the event id, its stream id, and whether it was a duplicate."""

    event_id: str
    stream_id: str
    duplicate: bool


@dataclass(frozen=True)
class Change:
    """One status change of a delivery (event x handler); see :meth:`EventStore.transition`."""

    event_id: str
    handler: str
    status: str
    reason: str = ""
    #: "" (always), "fresh", "undispatched" or "unstarted" (see transition.lua)
    guard: str = ""
    task_id_expected: str = ""
    #: Fields set on the delivery record.
    fields: dict[str, Any] = field(default_factory=dict)
    #: Also return the event's data and the delivery's run count.
    read: bool = False
    #: What the handler reported (kept beside the delivery, see :meth:`EventStore.outcome`).
    outcome: dict[str, Any] | None = None


@dataclass
class StoredEvent:
    """An event with what the store knows about it."""

    event: Event
    status: str
    stream_id: str
    deliveries: dict[str, dict[str, Any]] = field(default_factory=dict)
    acknowledged: dict[str, Any] | None = None

    def as_dict(self, *, with_deliveries: bool = True) -> dict[str, Any]:
        data = json.loads(self.event.to_json())
        data["status"] = self.status
        data["stream_id"] = self.stream_id
        if self.acknowledged:
            data["acknowledged"] = self.acknowledged
        if with_deliveries:
            data["deliveries"] = list(self.deliveries.values())
        return data


class Scripts:
    """The Lua scripts beside this module, registered once per client."""

    def __init__(self, client: redis.Redis) -> None:
        folder = Path(__file__).parent / "lua"
        self.publish = client.register_script((folder / "publish.lua").read_text())
        self.transition = client.register_script((folder / "transition.lua").read_text())
        self.claim = client.register_script((folder / "claim.lua").read_text())
        self.set_status = client.register_script((folder / "set_status.lua").read_text())
        self.sent = client.register_script((folder / "sent.lua").read_text())


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
            reply = self._call(
                self.scripts.publish,
                keys=[
                    keys.dedupe(event.dedupe_key or ""),
                    keys.stream,
                    keys.type_stream(event.type),
                    keys.event(event.id),
                    keys.pending,
                    keys.dispatch,
                ],
                args=[
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
                ],
            )
        except redis.ResponseError as exc:
            if str(exc).startswith("EXISTS"):  # an ingested event that kept its own id
                raise InvalidInput("id", f"an event {event.id!r} is already stored") from None
            raise
        event_id, stream_id, duplicate = reply
        return Published(str(event_id), str(stream_id), bool(int(duplicate)))

    # -- reading ----------------------------------------------------------------------------

    def get(self, event_id: str) -> StoredEvent:
        """One event with its deliveries; NotFound when no such event is stored."""
        found = self.get_many([event_id])
        if not found:
            raise NotFound("event_id", f"no event {event_id!r} is stored")
        return found[0]

    def get_many(self, event_ids: Iterable[str]) -> list[StoredEvent]:
        """The stored events among these ids, in order, in one round trip."""
        ids = list(event_ids)
        pipe = self.redis.pipeline(transaction=False)
        for event_id in ids:
            pipe.hgetall(self.keys.event(event_id))
            pipe.hgetall(self.keys.deliveries(event_id))
            pipe.hgetall(self.keys.outcomes(event_id))
        replies = self._execute(pipe)
        found = []
        for index in range(len(ids)):
            record, deliveries, outcomes = replies[3 * index : 3 * index + 3]
            if record:
                found.append(_stored(record, deliveries, outcomes))
        return found

    def still_pending(self, event_ids: list[str]) -> list[Event]:
        """The events among these ids still waiting for dispatch, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for event_id in event_ids:
            pipe.hmget(self.keys.event(event_id), "status", "data")
        return [Event.from_json(data) for status, data in self._execute(pipe)
                if status == "pending" and data]  # fmt: skip

    def history(
        self,
        event_type: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int = 100,
        newest_first: bool = True,
    ) -> list[StoredEvent]:
        """Stored events by type and time window (stream ids are the time bounds)."""
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
        return self.get_many(fields["id"] for _, fields in entries)

    def scan_history(
        self,
        event_type: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        batch: int = 500,
    ) -> Iterator[StoredEvent]:
        """Every stored event in the window, oldest first, read in batches."""
        low = stream_bound(since, upper=False)
        high = stream_bound(until, upper=True)
        stream = self.keys.type_stream(event_type) if event_type else self.keys.stream
        while True:
            with reaching_redis():
                entries: list[Any] = self.redis.xrange(stream, low, high, count=batch)  # type: ignore[assignment]
            yield from self.get_many(fields["id"] for _, fields in entries)
            if len(entries) < batch:
                return
            low = "(" + entries[-1][0]

    def delivery(self, event_id: str, handler: str) -> dict[str, Any] | None:
        with reaching_redis():
            raw: Any = self.redis.hget(self.keys.deliveries(event_id), handler)
        return _delivery(raw) if raw else None

    # -- status -----------------------------------------------------------------------------

    def transition(
        self,
        event_id: str,
        handler: str,
        status: str,
        reason: str = "",
        *,
        fresh_only: bool = False,
        guard: str = "",
        task_id_expected: str = "",
        outcome: dict[str, Any] | None = None,
        **fields: Any,
    ) -> tuple[str, str, bool]:
        """Move a delivery to ``status``, recording when and why.

        Returns (previous delivery status, event status, applied). The change is
        refused (applied False) with ``fresh_only`` (or ``guard="fresh"``) when the
        delivery already succeeded or was skipped; with ``guard="undispatched"`` when a
        dispatch already recorded it (unless its enqueue failed); and with
        ``task_id_expected`` when the delivery now belongs to another task. ``outcome``,
        what the handler reported (an agent's text, tool calls, tokens), is kept with
        the change, in the same call.
        """
        change = Change(event_id, handler, status, reason, guard="fresh" if fresh_only else guard,
                        task_id_expected=task_id_expected, fields=fields,
                        outcome=outcome)  # fmt: skip
        reply = self._transition(change)
        return str(reply[0]), str(reply[1]), reply[2] == "ok"

    def transitions(self, changes: list[Change]) -> list[tuple[str, str, bool] | Exception]:
        """Apply many changes in one pipeline; each as :meth:`transition` would.

        A change that fails gives its error in its place (NotFound for an event no
        longer stored): the others are applied all the same, so nothing is raised for
        one change alone.
        """
        if not changes:
            return []
        replies = self._run_scripts([self._transition_call(change) for change in changes])
        results: list[tuple[str, str, bool] | Exception] = []
        for change, reply in zip(changes, replies, strict=True):
            if isinstance(reply, Exception):
                missing = str(reply).startswith("NOTFOUND")
                results.append(_not_found(change.event_id, reply) if missing else reply)
            else:
                results.append((str(reply[0]), str(reply[1]), reply[2] == "ok"))
        return results

    def begin(
        self, event_id: str, handler: str, attempt: int, task_id: str, *, replay: bool = False
    ) -> tuple[Event, int] | None:
        """Mark a delivery running for this task and read its event, in one round trip.

        Returns the event and how many times the delivery has been started since it
        was queued, or None when the run is refused: the delivery already succeeded
        (unless this is a replay) or now belongs to another task. A started delivery's
        message evidently reached the broker: a dispatch that could not tell whether it
        did (``enqueue_failed``) will not enqueue it again.
        """
        change = Change(event_id, handler, "running", f"attempt {attempt}",
                        guard="" if replay else "fresh", task_id_expected=task_id,
                        fields={"attempts": attempt, "enqueue_failed": False},
                        read=True)  # fmt: skip
        reply = self._transition(change)
        if reply[2] != "ok":
            return None
        return Event.from_json(reply[3]), int(reply[4])

    def _transition(self, change: Change) -> Any:
        """Run the transition script for one change."""
        script, keys, args = self._transition_call(change)
        try:
            return self._call(script, keys=keys, args=args)
        except redis.ResponseError as exc:
            raise _not_found(change.event_id, exc) from None

    def _transition_call(self, change: Change) -> ScriptCall:
        """The transition script's call for one change."""
        if change.status not in DELIVERY_STATUSES:
            raise InvalidInput(
                "status", f"{change.status!r} is not one of {', '.join(DELIVERY_STATUSES)}"
            )
        keys = [self.keys.deliveries(change.event_id), self.keys.event(change.event_id),
                self.keys.outcomes(change.event_id)]  # fmt: skip
        args = [change.handler, change.status, now_iso(), change.reason[:MAX_REASON],
                json.dumps(change.fields), change.guard, change.task_id_expected,
                "1" if change.read else "", _outcome_json(change.outcome)]  # fmt: skip
        return self.scripts.transition, keys, args

    def mark_dispatched(self, event_id: str, status: str | None = None, reason: str = "") -> None:
        """Clear an event from ``pending``; set its own status when no delivery derives one.

        An event with a delivery that a dispatch recorded but no broker is known to have
        taken (``enqueue_failed``) stays pending, for the sweeper.
        """
        fields = {"status": status, "reason": reason} if status is not None else {}
        self._set_status(event_id, fields, clear_pending=True)

    def mark_dispatched_many(
        self,
        events: list[tuple[str, str | None]],
        reason: str = "",
        sent: Sequence[tuple[str, str, str]] = (),
    ) -> None:
        """:meth:`mark_dispatched` for many (event id, own status or None), in one pipeline.

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
            calls.append((self.scripts.set_status, [self.keys.event(event_id), self.keys.pending,
                          self.keys.deliveries(event_id)], [event_id, "1", *pairs]))  # fmt: skip
        for reply in self._run_scripts(calls):
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
        previous = self._call(
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

    def take_dispatch(self, limit: int, wait: float) -> list[str]:
        """Up to ``limit`` ids of events handed to the dispatchers, oldest first.

        Blocks up to ``wait`` seconds for the first; each id goes to one caller only.
        An id taken by a process that dies before dispatching stays ``pending``, for
        the sweeper.
        """
        with reaching_redis():
            first: Any = self.redis.blpop([self.keys.dispatch], timeout=wait)
            if not first:
                return []
            more: Any = self.redis.lpop(self.keys.dispatch, limit - 1) if limit > 1 else None
        return [str(first[1]), *(str(x) for x in more or ())]

    def claim_pending(self, event_id: str, lease: float) -> bool:
        """Take a pending event for dispatch: True for exactly one of several sweepers."""
        now = time.time()
        claimed = self._call(
            self.scripts.claim,
            keys=[self.keys.pending],
            args=[event_id, int(now * 1000), int((now + lease) * 1000)],
        )
        return bool(claimed)

    # -- plumbing ---------------------------------------------------------------------------

    def _run_scripts(self, calls: list[ScriptCall]) -> list[Any]:
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

    def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        with reaching_redis():
            return script(keys=keys, args=args)

    def _execute(self, pipe: Any) -> list[Any]:
        with reaching_redis():
            return list(pipe.execute())


@contextmanager
def reaching_redis() -> Iterator[None]:
    """Turn a Redis that cannot be reached into StoreUnavailable."""
    try:
        yield
    except redis.ConnectionError as exc:
        raise StoreUnavailable(f"the event store's Redis is unreachable: {exc}") from exc
    except redis.TimeoutError as exc:
        raise StoreUnavailable(f"the event store's Redis timed out: {exc}") from exc


def _outcome_json(outcome: dict[str, Any] | None) -> str:
    """An outcome as JSON for the store ("" for none); one that is not JSON says why."""
    if outcome is None:
        return ""
    try:
        return json.dumps(outcome, default=str)
    except (TypeError, ValueError) as exc:
        return json.dumps({"unrecordable": str(exc)})


def _not_found(event_id: str, error: Exception) -> NotFound:
    """NotFound for a script that found no event record; any other error is raised."""
    if str(error).startswith("NOTFOUND"):
        return NotFound("event_id", f"no event {event_id!r} is stored")
    raise error


def _delivery(raw: str) -> dict[str, Any]:
    delivery: dict[str, Any] = json.loads(raw)
    if not delivery.get("history"):
        delivery["history"] = []  # Lua's cjson writes an empty table as {}
    return delivery


def _stored(
    record: dict[str, str], deliveries: dict[str, str], outcomes: dict[str, str]
) -> StoredEvent:
    by_handler = {handler: _delivery(raw) for handler, raw in sorted(deliveries.items())}
    for handler, raw in outcomes.items():
        if handler in by_handler:
            by_handler[handler]["outcome"] = json.loads(raw)
    return StoredEvent(
        event=Event.from_json(record["data"]),
        status=record.get("status", "pending"),
        stream_id=record.get("sid", ""),
        deliveries=by_handler,
        acknowledged=json.loads(record["ack"]) if "ack" in record else None,
    )
