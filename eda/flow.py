"""Flow control: how many deliveries of a handler run at once, how fast, and which at all.

Declared on routes (the routes file) and agents (the agents file)::

    concurrency: {limit: 4, key: customer.id}   # at most 4 at once (per key value)
    rate_limit: 20/s                            # N/s, N/m or N/h (per key: {rate, key})
    rate_limit: {rate: 100/m, key: repo, drop: true}   # over the rate: dropped, not delayed
    debounce: {period: 60s, key: pull_request.number, timeout: 10m}
    priority: high                              # routes only: high, normal (default), low
    budget: {tokens_per_day: 200000, cost_per_day: 25, when_spent: hold}   # agents only

and enforced across every worker through Redis (scripts in ``lua/flow_*.lua``),
by a gate that an attempt passes before it starts (:func:`gate`):

- **concurrency**: leases that expire (``EDA_FLOW_LEASE``) in a sorted set per
  handler and key value. A delivery that finds no free slot is *parked* (status
  ``waiting``, no message, no worker thread, no retry spent); the attempt that
  frees a slot hands it to the first parked delivery and sends it again, and the
  sweep hands out slots that expired with a killed worker;
- **rate limits**: GCRA; a delivery over the rate reserves the next free slot and
  waits for it (its message comes back then), or is dropped (``skipped``);
- **debounce**: each delivery registers its event for the key; a delivery whose
  event was followed by a newer one within the period ends ``skipped``, recorded
  as coalesced into the newer; the newest runs once the period passes with nothing
  new (at most ``timeout`` after the first);
- **budgets**: tokens an agent used today (UTC) are counted from each attempt's
  outcome, and their cost in USD at its model's price (``EDA_MODEL_PRICES``); past
  either budget its deliveries wait for the next day, or dead-letter;
- **model back-pressure**: a 429 or 529 with ``retry-after`` pauses every delivery
  of that model for that long (:meth:`FlowControl.pause_model`).

Each wait, drop and coalescing is on the delivery's record with its reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from eda import logs, lua
from eda.errors import reaching_redis
from eda.keys import Keys

if TYPE_CHECKING:
    import redis

    from eda.core import Core
    from eda.event import Event

log = logging.getLogger(__name__)

#: ``20/s``, ``100/m``, ``1000/h``.
RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*$")
#: ``500ms``, ``30s``, ``10m``, ``2h`` (or a number of seconds).
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
#: Broker priorities of a route's ``priority`` (kombu's Redis steps: lower runs first).
PRIORITIES = {"high": 0, "normal": 5, "low": 9}
#: What a waiting delivery may wait for (its record's ``held``, counted by the stats).
HOLDS = ("concurrency", "rate limit", "debounce", "budget", "model pause")
#: Most in-flight deliveries the stats read to count those waiting.
WAITING_SAMPLE = 10_000
#: Longest a delivery waits before its gate is asked again (a day's budget, a long pause).
MAX_WAIT = 3600.0
#: Seconds a day's budget counts are kept (the day, and the next for the stats).
BUDGET_KEPT = 2 * 86_400


def seconds(value: Any) -> float:
    """A duration as seconds: a number, or ``500ms``, ``30s``, ``10m``, ``2h``."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration such as 30s")
    if isinstance(value, int | float):
        return float(value)
    match = DURATION.fullmatch(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration such as 500ms, 30s, 10m or 2h")
    return float(match.group(1)) * UNIT_SECONDS[match.group(2) or "s"]


class FlowModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Concurrency(FlowModel):
    """At most ``limit`` deliveries of the handler at once (per value of ``key``)."""

    limit: int = Field(ge=1, le=10_000)
    key: str | None = None


class RateLimit(FlowModel):
    """At most ``rate`` deliveries a second, minute or hour (per value of ``key``)."""

    rate: str
    key: str | None = None
    #: Over the rate: dropped (recorded ``skipped``) rather than delayed.
    drop: bool = False

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        """``20/s`` alone is the rate."""
        return {"rate": value} if isinstance(value, str) else value

    @field_validator("rate")
    @classmethod
    def _rate(cls, value: str) -> str:
        match = RATE.fullmatch(value)
        if not match or float(match.group(1)) <= 0:
            raise ValueError(f"{value!r} is not a rate such as 20/s, 100/m or 1000/h")
        return value

    @property
    def interval(self) -> float:
        """Seconds between two deliveries at this rate."""
        match = RATE.fullmatch(self.rate)
        assert match is not None
        return UNIT_SECONDS[match.group(2)] / float(match.group(1))


class Debounce(FlowModel):
    """Events of one key within ``period`` become one delivery, of the newest event."""

    period: float
    key: str | None = None
    #: Longest a burst is held after its first event (default: ten periods).
    timeout: float | None = None

    @field_validator("period", "timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else seconds(value)


class Budget(FlowModel):
    """Tokens (input, output and cache) an agent may use a day (UTC), and what they may cost."""

    tokens_per_day: int | None = Field(default=None, ge=1)
    #: USD a day, at the model's price in ``EDA_MODEL_PRICES``.
    cost_per_day: float | None = Field(default=None, gt=0)
    #: Past the budget: ``hold`` deliveries until the next day, or ``dead``-letter them.
    when_spent: Literal["hold", "dead"] = "hold"

    @model_validator(mode="after")
    def _one_limit(self) -> Budget:
        if self.tokens_per_day is None and self.cost_per_day is None:
            raise ValueError("a budget needs tokens_per_day, cost_per_day or both")
        return self


class ModelPrice(FlowModel):
    """A model's price in USD per million tokens (one entry of ``EDA_MODEL_PRICES``).

    Cache writes and reads default to the Messages API's ratios to the input price
    (1.25 and 0.1).
    """

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_write: float | None = Field(default=None, ge=0)
    cache_read: float | None = Field(default=None, ge=0)

    def cost(self, usage: Mapping[str, Any]) -> float:
        """USD of one attempt's ``usage`` (the Messages API's token counters)."""
        write = self.input * 1.25 if self.cache_write is None else self.cache_write
        read = self.input * 0.1 if self.cache_read is None else self.cache_read
        prices = {
            "input_tokens": self.input,
            "output_tokens": self.output,
            "cache_creation_input_tokens": write,
            "cache_read_input_tokens": read,
        }
        per_million = sum(
            prices[name] * count
            for name, count in usage.items()
            if name in prices and isinstance(count, int) and not isinstance(count, bool)
        )
        return per_million / 1_000_000


def usd(amount: float) -> str:
    """An amount of dollars as a budget's reason shows it: cents, or finer below a cent."""
    return f"${amount:.2f}" if amount >= 0.01 or amount == 0 else f"${amount:.6f}"


class FlowRules(FlowModel):
    """What a route or an agent declares; route keys win over the agent's for its deliveries."""

    concurrency: Concurrency | None = None
    rate_limit: RateLimit | None = None
    debounce: Debounce | None = None
    priority: Literal["high", "normal", "low"] | None = None
    budget: Budget | None = None

    def over(self, base: FlowRules | None) -> FlowRules:
        """These rules, with what they leave unset taken from ``base``."""
        if base is None:
            return self
        mine = self.model_dump(exclude_none=True)
        return FlowRules.model_validate({**base.model_dump(exclude_none=True), **mine})

    @property
    def empty(self) -> bool:
        return not self.model_dump(exclude_none=True)


@dataclass(frozen=True)
class Verdict:
    """What the gate says: go (with the concurrency lease taken), or not yet, or not at all."""

    go: bool
    #: Seconds until the delivery should ask again (0 with ``parked``: a slot wakes it).
    wait: float = 0.0
    reason: str = ""
    #: The delivery waits, with no message, for a concurrency slot.
    parked: bool = False
    #: ``skipped`` (dropped, coalesced) or ``dead`` (budget spent): it ends without running.
    end: str = ""
    lease: str = ""
    #: What it waits for, as the record and the stats name it (one of :data:`HOLDS`).
    hold: str = ""
    #: What the delivery carries to its next pass (a debounce passed, a rate slot reserved).
    state: dict[str, Any] = field(default_factory=dict)


GO = Verdict(True)


def key_value(payload: Any, path: str | None) -> str:
    """The part of a flow key a payload path gives ('' without one), short and Redis-safe."""
    from eda.routes import lookup  # routes declare flow rules: imported here, not above

    if path is None:
        return ""
    try:
        text = json.dumps(lookup(payload, path), sort_keys=True)
    except TypeError:  # the path is not in the payload
        text = "(missing)"
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:16]


class FlowControl:
    """The Redis side of flow control for one deployment."""

    def __init__(self, client: redis.Redis, keys: Keys, lease: float) -> None:
        self.redis = client
        self.keys = keys
        self.lease = lease
        self.acquire_script = lua.load(client, "flow_acquire")
        self.release_script = lua.load(client, "flow_release")
        self.gcra_script = lua.load(client, "flow_gcra")
        self.debounce_script = lua.load(client, "flow_debounce")
        #: The clock (epoch seconds) budgets and rates are measured by.
        self.clock: Callable[[], float] = time.time

    # -- concurrency ------------------------------------------------------------------------

    def acquire(
        self, scope: str, member: str, limit: int, waiter: dict[str, str]
    ) -> tuple[bool, list[dict[str, str]]]:
        """Take a slot for ``member``, or park it (``waiter``: what wakes it); also the parked
        deliveries that free slots went to first, to be sent again."""
        now = self.clock()
        with reaching_redis():
            reply = self.acquire_script(
                keys=[
                    self.keys.flow_leases(scope),
                    self.keys.flow_parked(scope),
                    self.keys.flow_scopes,
                ],
                args=[
                    member,
                    now,
                    now + self.lease,
                    limit,
                    json.dumps({**waiter, "member": member}, sort_keys=True),
                    scope,
                ],
            )
        return bool(int(reply[0])), [json.loads(item) for item in reply[1:]]

    def release(self, scope: str, member: str, limit: int | None = None) -> list[dict[str, str]]:
        """Free ``member``'s slot (if any) and hand free slots to parked deliveries: those woken."""
        now = self.clock()
        with reaching_redis():
            woken = self.release_script(
                keys=[
                    self.keys.flow_leases(scope),
                    self.keys.flow_parked(scope),
                    self.keys.flow_scopes,
                ],
                args=[member, now, now + self.lease, limit or 0, scope],
            )
        return [json.loads(item) for item in woken or ()]

    def scopes(self) -> dict[str, int]:
        """Concurrency scopes with slots held or deliveries parked, and their limits."""
        with reaching_redis():
            raw: dict[str, str] = self.redis.hgetall(self.keys.flow_scopes)  # type: ignore[assignment]
        return {scope: int(limit) for scope, limit in raw.items()}

    def parked(self) -> tuple[set[str], set[str]]:
        """Every delivery parked for a slot, and every one holding a slot whose lease has not
        run out; each as ``"<event id> <handler>"``."""
        now = self.clock()
        pipe = self.redis.pipeline(transaction=False)
        for scope in self.scopes():
            pipe.lrange(self.keys.flow_parked(scope), 0, -1)
            pipe.zrangebyscore(self.keys.flow_leases(scope), now, "+inf")
        with reaching_redis():
            replies = pipe.execute()
        parked = {json.loads(waiter)["member"] for waiters in replies[::2] for waiter in waiters}
        return parked, {str(member) for members in replies[1::2] for member in members}

    def in_use(self) -> dict[str, dict[str, int]]:
        """Per concurrency scope: slots in use and deliveries parked (what stats shows)."""
        now = self.clock()
        scopes = self.scopes()
        pipe = self.redis.pipeline(transaction=False)
        for scope in scopes:
            pipe.zcount(self.keys.flow_leases(scope), now, "+inf")
            pipe.llen(self.keys.flow_parked(scope))
        with reaching_redis():
            replies = pipe.execute()
        return {
            scope: {
                "limit": limit,
                "running": int(replies[2 * i]),
                "waiting": int(replies[2 * i + 1]),
            }
            for i, (scope, limit) in enumerate(scopes.items())
        }

    # -- rate, debounce, pauses, budgets ----------------------------------------------------

    def reserve(self, scope: str, interval: float, drop: bool) -> float:
        """GCRA: 0 when a delivery may start now, else the seconds until the slot it reserved.

        With ``drop`` nothing is reserved: a positive answer means "over the rate".
        """
        with reaching_redis():
            wait = self.gcra_script(
                keys=[self.keys.flow_rate(scope)],
                args=[self.clock(), interval, "1" if drop else "0"],
            )
        return float(wait)

    def debounce(
        self, scope: str, event_id: str, event_ms: int, period: float, timeout: float
    ) -> tuple[str, float]:
        """Register an event for a debounce key: ('run', 0), ('wait', seconds) or ('coalesced',
        the newer event id)."""
        with reaching_redis():
            verdict, value = self.debounce_script(
                keys=[self.keys.flow_debounce(scope)],
                args=[event_id, event_ms, self.clock(), period, timeout],
            )
        return str(verdict), (float(value) if verdict == "wait" else value)

    def pause_model(self, model: str, wait: float) -> None:
        """Pause every delivery of ``model`` for ``wait`` seconds (a 429's or 529's retry-after)."""
        until = self.clock() + wait
        with reaching_redis():
            self.redis.zadd(self.keys.flow_pauses, {model: until}, gt=True)

    def model_pause(self, model: str) -> float:
        """Seconds left of a pause of ``model`` (0 when none)."""
        with reaching_redis():
            until = self.redis.zscore(self.keys.flow_pauses, model)
        return self.pause_left(until)

    def pause_left(self, until: float | None) -> float:
        """Seconds left of a pause that lasts ``until`` (epoch seconds; None: no pause)."""
        return max(0.0, float(until) - self.clock()) if until else 0.0

    def day(self) -> str:
        return datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%d")

    def until_tomorrow(self) -> float:
        now = datetime.fromtimestamp(self.clock(), UTC)
        tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        return (tomorrow - now).total_seconds()

    def spent(self, agent: str) -> Spent:
        """Tokens an agent used today (UTC), and what they cost."""
        day = self.day()
        with reaching_redis():
            tokens, cost = self.redis.mget(
                [self.keys.flow_budget(agent, day), self.keys.flow_cost(agent, day)]
            )
        return Spent(int(tokens or 0), float(cost or 0))


@dataclass(frozen=True)
class Spent:
    """An agent's use of the day: tokens, and their cost in USD."""

    tokens: int = 0
    cost: float = 0.0


# -- the gate -----------------------------------------------------------------------------------


def scope_of(handler: str, payload: Any, path: str | None) -> str:
    """What one limit counts: a handler, or a handler and the value of a payload field."""
    value = key_value(payload, path)
    return f"{handler}|{value}" if value else handler


def gate(
    core: Core,
    event: Event,
    handler: str,
    task_id: str,
    state: dict[str, Any],
    *,
    pause: float | None = None,
) -> Verdict:
    """May this delivery start now? Debounce, budget, model pause, rate, then concurrency.

    ``state`` is what the delivery carries from an earlier pass (a debounce passed, a
    rate slot reserved); the verdict's ``state`` is what it carries to the next one.
    ``pause``: the seconds left of the handler's model's pause, when read already.
    """
    rules = core.flow_rules(handler, event.type) or FlowRules()
    flow = core.flow
    for check in (_debounced, _within_budget):
        verdict = check(core, rules, event, handler, state)
        if verdict is not None:
            return verdict
    verdict = _model_free(core, handler, state, pause)
    if verdict is None:
        verdict = _within_rate(core, rules, event, handler, state)
    if verdict is not None:
        return verdict
    if rules.concurrency is None:
        return Verdict(True, state=state)
    limit = rules.concurrency
    scope = scope_of(handler, event.payload, limit.key)
    waiter = {
        "event_id": event.id,
        "handler": handler,
        "task_id": task_id,
        "state": json.dumps(state, sort_keys=True),
    }
    taken, woken = flow.acquire(scope, f"{event.id} {handler}", limit.limit, waiter)
    wake(core, woken)
    if not taken:
        return Verdict(
            False,
            parked=True,
            state=state,
            reason=f"concurrency: all {limit.limit} slots in use, parked for one",
            hold="concurrency",
        )
    return Verdict(True, lease=scope, state=state)


def _debounced(
    core: Core, rules: FlowRules, event: Event, handler: str, state: dict[str, Any]
) -> Verdict | None:
    if rules.debounce is None or state.get("debounced"):
        return None
    rule = rules.debounce
    scope = scope_of(handler, event.payload, rule.key)
    millis = int(event.time.timestamp() * 1000)
    timeout = rule.timeout if rule.timeout is not None else 10 * rule.period
    verdict, value = core.flow.debounce(scope, event.id, millis, rule.period, timeout)
    if verdict == "coalesced":
        return Verdict(False, end="skipped", reason=f"debounce: coalesced into event {value}")
    if verdict == "wait":
        return Verdict(
            False,
            wait=float(value),
            state=state,
            reason=f"debounce: waiting {rule.period:g} s for newer events",
            hold="debounce",
        )
    state["debounced"] = True
    return None


def _within_budget(
    core: Core, rules: FlowRules, event: Event, handler: str, state: dict[str, Any]
) -> Verdict | None:
    if rules.budget is None:
        return None
    spent, budget = core.flow.spent(handler), rules.budget
    if budget.tokens_per_day is not None and spent.tokens >= budget.tokens_per_day:
        reason = f"budget: {spent.tokens} of {budget.tokens_per_day} tokens used today (UTC)"
    elif budget.cost_per_day is not None and spent.cost >= budget.cost_per_day:
        reason = f"budget: {usd(spent.cost)} of {usd(budget.cost_per_day)} spent today (UTC)"
    else:
        return None
    if budget.when_spent == "dead":
        return Verdict(False, end="dead", reason=reason)
    wait = min(core.flow.until_tomorrow(), MAX_WAIT)
    return Verdict(
        False, wait=wait, state=state, reason=f"{reason}: held until tomorrow", hold="budget"
    )


def _model_free(
    core: Core, handler: str, state: dict[str, Any], pause: float | None
) -> Verdict | None:
    model = core.handlers.model(handler) if core.handlers is not None else None
    if not model:
        return None
    left = core.flow.model_pause(model) if pause is None else pause
    return paused(model, left, state) if left > 0 else None


def paused(model: str, left: float, state: dict[str, Any]) -> Verdict:
    """The verdict for a delivery of ``model`` while its pause has ``left`` seconds."""
    return Verdict(
        False,
        wait=min(left, MAX_WAIT),
        state=state,
        reason=f"model {model} asked every caller to wait",
        hold="model pause",
    )


def _within_rate(
    core: Core, rules: FlowRules, event: Event, handler: str, state: dict[str, Any]
) -> Verdict | None:
    rule = rules.rate_limit
    if rule is None:
        return None
    now = core.flow.clock()
    reserved = float(state.get("reserved_at", 0))
    if reserved:
        if reserved - now > 0.001:  # back a little early: the slot is still its own
            return Verdict(
                False,
                wait=reserved - now,
                state=state,
                reason=f"rate limit {rule.rate}: waiting for its slot",
                hold="rate limit",
            )
        return None
    wait = core.flow.reserve(scope_of(handler, event.payload, rule.key), rule.interval, rule.drop)
    if wait <= 0:
        return None
    if rule.drop:
        return Verdict(False, end="skipped", reason=f"rate limit {rule.rate}: dropped")
    state["reserved_at"] = now + wait
    return Verdict(
        False,
        wait=wait,
        state=state,
        reason=f"rate limit {rule.rate}: waiting for its slot",
        hold="rate limit",
    )


def wake(core: Core, woken: list[dict[str, str]]) -> None:
    """Send again the parked deliveries a concurrency slot was handed to.

    One whose message the broker refuses is recorded as queued and never sent, with its
    flow state, so that recovery sends it on any broker (RabbitMQ cannot list what waits).
    """
    if not woken:
        return
    from eda.delivery import Change, Status  # the delivery module imports this one

    stored = {s.event.id: s.event for s in core.store.get_many(w["event_id"] for w in woken)}
    enqueuer = core._enqueuer()
    for waiter in woken:
        event = stored.get(waiter["event_id"])
        if event is None:
            continue
        state = json.loads(waiter.get("state") or "{}")
        try:
            enqueuer.deliver(event, waiter["handler"], waiter["task_id"], flow=state)
        except Exception as exc:
            log.warning(
                "a delivery handed a concurrency slot could not be sent: %s",
                logs.error_summary(exc),
                extra={"event_id": event.id, "handler": waiter["handler"]},
            )
            core.deliveries.apply(
                Change(
                    event.id,
                    waiter["handler"],
                    "unwoken",
                    Status.QUEUED,
                    f"handed a concurrency slot, send failed, will be swept: "
                    f"{logs.error_summary(exc)}",
                    task_id=waiter["task_id"],
                    options={"enqueue_failed": True, "carry": state},
                )
            )


def release(core: Core, scope: str, event_id: str, handler: str) -> None:
    """Give back a delivery's concurrency slot, waking who was parked for it."""
    wake(core, core.flow.release(scope, f"{event_id} {handler}"))


def waiting(core: Core) -> dict[str, dict[str, int]]:
    """Deliveries waiting, per handler and what they wait for (:data:`HOLDS`), over the
    first :data:`WAITING_SAMPLE` in flight."""
    with reaching_redis():
        members = core.redis.zrange(core.keys.inflight, 0, WAITING_SAMPLE - 1)
        pairs = [str(member).split(" ", 1) for member in members]
        pipe = core.redis.pipeline(transaction=False)
        for event_id, handler in pairs:
            pipe.hget(core.keys.deliveries(event_id), handler)
        raws = pipe.execute()
    counts: dict[str, dict[str, int]] = {}
    for (_, handler), raw in zip(pairs, raws, strict=True):
        record = json.loads(raw) if raw else {}
        if record.get("status") == "waiting":
            # A record from before holds were named: parked ones waited for a slot.
            hold = record.get("held") or ("concurrency" if record.get("parked") else "other")
            per_handler = counts.setdefault(handler, {})
            per_handler[hold] = per_handler.get(hold, 0) + 1
    return counts


def tick(core: Core) -> int:
    """Hand slots whose leases expired (a killed worker's) to parked deliveries; how many."""
    woken = 0
    for scope in core.flow.scopes():
        handed = core.flow.release(scope, "")
        wake(core, handed)
        woken += len(handed)
    return woken
