"""Flow control across real workers: concurrency, rate limits, debounce, priority, budgets."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from eda import flow
from eda.core import Core
from eda.delivery import Outcome, run_attempt
from eda.event import Event
from eda.flow import Budget, Concurrency, FlowRules, RateLimit
from eda.handlers import HandlerRegistry
from eda.settings import Settings
from scripts.cli import main
from tests.conftest import wait_for
from tests.handlers import attempts
from tests.lifecycle import governed, queue
from tests.workers import Worker

pytestmark = [pytest.mark.timeout(90), pytest.mark.brokers]


@pytest.fixture(scope="module")
def second_worker(worker: Worker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """A second worker process on the session's broker: limits must hold across both."""
    started = Worker(tmp_path_factory.mktemp("flow") / "second.log", name="second", concurrency=8)
    yield started
    started.stop()


def run_stats(core: Core, *args: str) -> str:
    """``eda stats`` on this core, as an operator reads it (a wide terminal)."""
    result = CliRunner().invoke(main, ["stats", *args], obj=core, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.stdout


def all_ended(core: Core, ids: list[str], handler: str, *statuses: str) -> bool:
    wanted = statuses or ("succeeded",)
    return all(core.get_event(i).deliveries[handler]["status"] in wanted for i in ids)


def peak(client: Any, probe: str, group: str = "") -> int:
    return int(client.get(f"test-probe:{probe}:{group}:max") or 0)


def test_a_concurrency_limit_holds_across_two_workers_and_every_delivery_succeeds(
    live: Core, second_worker: Worker, client: Any, unique_type: Any
) -> None:
    probe, handler = uuid.uuid4().hex, "tests.handlers:concurrent_probe"
    event_type = unique_type("cap", "flowcap")
    ids = [live.publish(event_type, {"probe": probe}, "t").event_id for _ in range(200)]

    wait_for(lambda: all_ended(live, ids, handler), timeout=80, interval=0.2)

    assert 2 <= peak(client, probe) <= 4  # never more than the limit, across both workers
    waited = [
        change["reason"]
        for i in ids
        for change in live.get_event(i).deliveries[handler]["history"]
        if change["status"] == "waiting"
    ]
    assert waited and all("concurrency: all 4 slots in use" in reason for reason in waited)
    assert live.flow.in_use().get(handler, {"running": 0})["running"] == 0  # all given back


def test_a_keyed_concurrency_limit_holds_for_each_key_apart(
    live: Core, second_worker: Worker, client: Any, unique_type: Any
) -> None:
    probe, handler = uuid.uuid4().hex, "tests.handlers:concurrent_probe"
    event_type = unique_type("key", "flowkey")
    ids = [
        live.publish(event_type, {"probe": probe, "group": group, "seconds": 0.1}, "t").event_id
        for _ in range(12)
        for group in ("a", "b", "c")
    ]

    wait_for(lambda: all_ended(live, ids, handler), timeout=60, interval=0.2)

    assert all(peak(client, probe, group) <= 2 for group in ("a", "b", "c"))
    assert peak(client, probe, "*") > 2  # the keys did not share one limit


def test_a_rate_limit_holds_across_two_workers(
    live: Core, second_worker: Worker, client: Any, unique_type: Any
) -> None:
    event_type = unique_type("rate", "flowrate")
    ids = [live.publish(event_type, {}, "t").event_id for _ in range(120)]

    wait_for(lambda: all_ended(live, ids, "tests.handlers:succeed"), timeout=40, interval=0.2)

    starts = sorted(attempts(client, i, "succeed")[0] for i in ids)
    rate = (len(starts) - 1) / (starts[-1] - starts[0])
    assert 18 <= rate <= 22, rate  # 20/s, within 10%, measured by the handler itself


def test_over_a_dropping_rate_limit_deliveries_are_recorded_dropped(
    live: Core, unique_type: Any
) -> None:
    event_type = unique_type("drop", "flowdrop")
    ids = [live.publish(event_type, {}, "t").event_id for _ in range(4)]
    handler = "tests.handlers:succeed"

    wait_for(lambda: all_ended(live, ids, handler, "succeeded", "skipped"))

    records = [live.get_event(i).deliveries[handler] for i in ids]
    assert sorted(r["status"] for r in records) == ["skipped"] * 3 + ["succeeded"]
    dropped = [r["history"][-1]["reason"] for r in records if r["status"] == "skipped"]
    assert dropped == ["rate limit 2/m: dropped"] * 3


def test_debounce_turns_a_burst_into_one_delivery_of_the_newest_event(
    live: Core, unique_type: Any, client: Any
) -> None:
    event_type = unique_type("push", "flowdebounce")
    handler = "tests.handlers:succeed"
    first = datetime.now(UTC)
    burst = [
        Event.create(
            type=event_type, source="t", payload={"pr": 7}, time=first + timedelta(milliseconds=n)
        )
        for n in range(5)
    ]
    for event in burst:
        live.store.publish(event)
    # One hand-over, as a burst reaches the relay: the deliveries meet within the period
    # however slowly a loaded machine stored them.
    live.dispatch_many(burst)
    ids = [event.id for event in burst]

    wait_for(lambda: all_ended(live, ids, handler, "succeeded", "skipped"), timeout=20)

    records = {i: live.get_event(i).deliveries[handler] for i in ids}
    assert records[ids[-1]]["status"] == "succeeded"
    assert len(attempts(client, ids[-1], "succeed")) == 1
    for index, earlier in enumerate(ids[:-1]):
        assert records[earlier]["status"] == "skipped"
        reason = records[earlier]["history"][-1]["reason"]
        assert reason.startswith("debounce: coalesced into event ")
        assert reason.rsplit(" ", 1)[1] in ids[index + 1 :]  # a newer one of the burst
        assert attempts(client, earlier, "succeed") == []


def test_a_high_priority_delivery_overtakes_a_backlog_of_low_ones_in_its_lane(
    private_broker: Any, live: Core, client: Any, unique_type: Any, tmp_path: Path
) -> None:
    broker, core = private_broker(5)
    core.enqueuer.priority_of = core.priority
    low, high = unique_type("backlog", "flowlow"), unique_type("urgent", "flowhigh")
    backlog = [core.publish(low, {}, "t").event_id for _ in range(30)]
    urgent = core.publish(high, {}, "t").event_id
    worker = Worker(tmp_path / "priority.log", {"CELERY_BROKER_URL": broker}, concurrency=1)
    try:
        wait_for(lambda: all_ended(core, [*backlog, urgent], "tests.handlers:succeed"), timeout=60)
    finally:
        worker.stop()
    order = sorted([*backlog, urgent], key=lambda i: attempts(client, i, "succeed")[0])
    assert order.index(urgent) <= 1  # at most the one message the worker had already taken


#: 10:00 UTC on the budgets' clock: fourteen hours before their next day.
TODAY = datetime(2026, 12, 2, 10, 0, tzinfo=UTC).timestamp()


def spending(
    settings: Settings,
    client: Any,
    outcome: dict[str, Any],
    budget: Budget,
    model: str | None = None,
    count: int = 3,
) -> tuple[Core, list[Event], list[float]]:
    """A core whose agent "Spender" reports ``outcome`` on each attempt, under ``budget``;
    ``count`` events queued for it; the clock its budgets count days by, set to TODAY."""
    registry = HandlerRegistry()
    registry.register("Spender", lambda event: outcome, flow=FlowRules(budget=budget), model=model)
    core = Core(settings, client, handlers=registry)
    clock = [TODAY]
    core.flow.clock = lambda: clock[0]
    events = [Event.create(type="spend.it", source="t") for _ in range(count)]
    for event in events:
        core.store.publish(event)
        queue(core.deliveries, event.id, "Spender", task="t1")
    return core, events, clock


def test_a_daily_token_budget_holds_an_agent_once_spent_and_resumes_the_next_day(
    settings: Settings, client: Any
) -> None:
    core, events, clock = spending(
        settings,
        client,
        {"usage": {"input_tokens": 4000, "output_tokens": 1000}},
        Budget(tokens_per_day=10_000),
    )

    verdicts = [run_attempt(core, e.id, "Spender", "t1", "here") for e in events]

    assert [v.outcome for v in verdicts] == [Outcome.SUCCEEDED, Outcome.SUCCEEDED, Outcome.WAIT]
    # Until midnight UTC, asked again at most every half visibility timeout meanwhile.
    assert verdicts[2].delay == pytest.approx(min(14 * 3600, settings.visibility_timeout / 2))
    held = core.get_event(events[2].id).deliveries["Spender"]
    assert held["status"] == "waiting"
    assert "budget: 10000 of 10000 tokens used today (UTC)" in held["history"][-1]["reason"]
    assert core.flow_state()["budgets"]["Spender"] == {
        "spent": 10_000,
        "tokens_per_day": 10_000,
        "cost": 0.0,
        "cost_per_day": None,
    }

    clock[0] = TODAY + 86_400  # the next day
    assert run_attempt(core, events[2].id, "Spender", "t1", "here").outcome is Outcome.SUCCEEDED
    assert core.flow_state()["budgets"]["Spender"]["spent"] == 5000


def test_a_daily_cost_budget_holds_an_agent_once_spent_at_its_model_price_until_the_next_day(
    make_settings: Any, client: Any
) -> None:
    settings = make_settings(model_prices={"claude-test": {"input": 3, "output": 15}})
    usage = {"input_tokens": 100_000, "output_tokens": 20_000, "cache_read_input_tokens": 1_000_000}
    core, events, clock = spending(
        settings,
        client,
        {"model": "claude-test", "usage": usage},  # $0.30 + $0.30 + $0.30 cached
        Budget(cost_per_day=1.5),
        model="claude-test",
    )

    verdicts = [run_attempt(core, e.id, "Spender", "t1", "here") for e in events]

    assert [v.outcome for v in verdicts] == [Outcome.SUCCEEDED, Outcome.SUCCEEDED, Outcome.WAIT]
    held = core.get_event(events[2].id).deliveries["Spender"]
    assert held["status"] == "waiting"
    assert held["history"][-1]["reason"] == (
        "budget: $1.80 of $1.50 spent today (UTC): held until tomorrow"
    )
    use = core.flow_state()["budgets"]["Spender"]
    assert (use["cost"], use["cost_per_day"]) == (pytest.approx(1.8), 1.5)
    assert "$1.80 of $1.50 today" in run_stats(core)

    clock[0] = TODAY + 86_400  # the next day
    assert run_attempt(core, events[2].id, "Spender", "t1", "here").outcome is Outcome.SUCCEEDED
    assert core.flow_state()["budgets"]["Spender"]["cost"] == pytest.approx(0.9)


def test_a_spent_cost_budget_declared_dead_dead_letters_the_delivery_with_the_reason(
    make_settings: Any, client: Any
) -> None:
    settings = make_settings(model_prices={"claude-test": {"input": 10, "output": 10}})
    core, events, _ = spending(
        settings,
        client,
        {"usage": {"input_tokens": 100_000}},  # $1.00 at the agent's model
        Budget(cost_per_day=1, when_spent="dead"),
        model="claude-test",
        count=2,
    )

    verdicts = [run_attempt(core, e.id, "Spender", "t1", "here") for e in events]

    assert [v.outcome for v in verdicts] == [Outcome.SUCCEEDED, Outcome.DEAD]
    letter = core.dead_letters.get(f"{events[1].id}:Spender")
    assert letter.error == "budget: $1.00 of $1.00 spent today (UTC)"


def test_stats_show_slots_in_use_while_held_and_waiting_deliveries_per_handler_and_reason(
    settings: Settings, client: Any
) -> None:
    core = governed(
        settings,
        client,
        Capped=FlowRules(concurrency=Concurrency(limit=2)),
        Paced=FlowRules(rate_limit=RateLimit(rate="1/h")),
    )
    events = [Event.create(type="flow.stats", source="t") for _ in range(5)]
    for event in events:
        core.store.publish(event)
    for event in events[:2]:  # two attempts that hold a slot each, running
        assert flow.gate(core, event, "Capped", "t1", {}).go

    held = json.loads(run_stats(core, "--json"))["flow"]
    assert held["concurrency"] == {"Capped": {"limit": 2, "running": 2, "waiting": 0}}
    assert held["waiting"] == {}

    queue(core.deliveries, events[2].id, "Capped", task="t1")
    assert run_attempt(core, events[2].id, "Capped", "t1").parked
    for event in events[3:]:
        queue(core.deliveries, event.id, "Paced", task="t1")
    paced = [run_attempt(core, e.id, "Paced", "t1").outcome for e in events[3:]]

    assert paced == [Outcome.SUCCEEDED, Outcome.WAIT]
    waited = json.loads(run_stats(core, "--json"))["flow"]
    assert waited["concurrency"] == {"Capped": {"limit": 2, "running": 2, "waiting": 1}}
    assert waited["waiting"] == {"Capped": {"concurrency": 1}, "Paced": {"rate limit": 1}}
    table = run_stats(core)
    assert "2 of 2, 1 waiting" in table and "1 rate limit" in table


def test_a_slot_whose_lease_ran_out_goes_to_a_parked_delivery_at_the_next_tick(
    live: Core, live_settings: Settings, client: Any, unique_type: Any
) -> None:
    core = Core(
        live_settings.model_copy(update={"flow_lease": 0.5}), client, live.enqueuer, live.routes
    )
    handler, group = "tests.handlers:concurrent_probe", uuid.uuid4().hex  # a scope of its own
    event_type = unique_type("lease", "flowkey")  # at most 2 at once per group
    events = [
        Event.create(type=event_type, source="t", payload={"probe": group, "group": group})
        for _ in range(3)
    ]
    for event in events:
        core.store.publish(event)
    for event in events[:2]:  # two workers take the slots, and die without giving them back
        assert flow.gate(core, event, handler, "t1", {}).go
    queue(core.deliveries, events[2].id, handler, task="t1")
    assert run_attempt(core, events[2].id, handler, "t1").parked

    wait_for(lambda: flow.tick(core) == 1, timeout=10, interval=0.1)  # once the leases ran out

    wait_for(lambda: all_ended(core, [events[2].id], handler), timeout=20)
    assert len(attempts(client, events[2].id, "concurrent_probe")) == 1
    assert flow.tick(core) == 0 and core.flow.in_use() == {}  # nothing parked, nothing held


def test_an_older_event_of_a_burst_that_comes_after_the_newest_ran_is_coalesced(
    core: Core,
) -> None:
    flow, scope, now = core.flow, "tests.handlers:succeed|late", [1000.0]
    flow.clock = lambda: now[0]
    assert flow.debounce(scope, "newest", 2000, 1.5, 15.0)[0] == "wait"
    now[0] += 2.0
    assert flow.debounce(scope, "newest", 2000, 1.5, 15.0)[0] == "run"
    # An older event's first pass, its message slower than the others': not a burst of its
    # own, which would run it after the newer one.
    assert flow.debounce(scope, "older", 1000, 1.5, 15.0) == ("coalesced", "newest")
    # A newer event afterwards starts the next burst.
    assert flow.debounce(scope, "next", 3000, 1.5, 15.0)[0] == "wait"
