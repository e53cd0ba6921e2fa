"""The ``eda`` command line, run through Click's runner against a real store (and a worker)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result

from eda.core import Core
from eda.dead_letters import DeadLetter
from eda.delivery import Change, Status
from eda.event import DeliveryInfo, Event
from eda.settings import Settings
from eda.store import ACK_STATUSES
from scripts.cli import main
from scripts.cli_progress import Interrupts
from tests.agent_fixtures import make_agent
from tests.conftest import RedisServer, wait_for
from tests.lifecycle import finish, kill, letter_for, queue, start
from tests.messages_api import MessagesAPI, message, messages_api, text, tool_use
from tests.redis_cost import cost

__all__ = ["make_agent", "messages_api"]  # fixtures used by the tests below

#: A wide terminal, so that ids are never folded in tables.
WIDE = {"COLUMNS": "250"}
#: Every interface: where serving without a token must be refused.
ALL_INTERFACES = "0.0.0.0"  # noqa: S104

AGENT_OUTCOME = {
    "agent": "AlertResponder",
    "model": "claude-sonnet-5-5",
    "backend": "anthropic",
    "outcome": "completed",
    "text": "Paged the on-call engineer.",
    "tool_calls": [
        {
            "name": "publish_event",
            "input": {"event_type": "alert.paged"},
            "result": "{}",
            "is_error": False,
            "duration_ms": 42,
            "refused": False,
        },
        {
            "name": "delete_everything",
            "input": {},
            "result": "not allowed",
            "is_error": True,
            "duration_ms": 0,
            "refused": True,
        },
    ],
    "stop_reason": "end_turn",
    "turns": 2,
    "usage": {
        "input_tokens": 1234,
        "output_tokens": 56,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 789,
    },
}


@pytest.fixture
def core(settings: Settings, client: Any) -> Core:
    """The core the CLI gets from tasks.connect(), on this test's prefix, without a broker."""
    from tasks import handlers

    registry, routes = handlers(settings)
    return Core(settings, client, routes=routes, handlers=registry)


def run(core: Core, *args: str, input: str | None = None, **env: str) -> Result:
    return CliRunner().invoke(main, list(args), obj=core, input=input, env={**WIDE, **env})


def run_json(core: Core, *args: str, input: str | None = None) -> Any:
    result = run(core, *args, "--json", input=input)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_one_line_error(result: Result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


def dead(core: Core, event_id: str, handler: str = "tests.handlers:fail") -> DeadLetter:
    """A dead delivery of a stored event, with its dead letter."""
    event = core.get_event(event_id).event
    return kill(
        core.deliveries,
        event,
        handler,
        "this handler always fails",
        task="t-1",
        traceback="Traceback (most recent call last):\n  ...\nPermanentError: boom",
    )


# -- events -----------------------------------------------------------------------------------


def events_of(core: Core, *args: str) -> list[dict[str, Any]]:
    page = run_json(core, "events", *args)
    assert set(page) == {"events", "next_cursor"}
    return list(page["events"])


def test_events_lists_summaries_newest_first_as_json(core: Core) -> None:
    ids = [core.publish("order.created", {"n": n}, "shop").event_id for n in range(3)]
    listed = events_of(core)
    assert [item["id"] for item in listed] == ids[::-1]
    assert set(listed[0]) == {"id", "type", "source", "time", "status", "handlers"}
    assert (listed[0]["status"], listed[0]["handlers"]) == ("pending", {})


def test_events_filters_by_type_limit_order_and_time(core: Core) -> None:
    first = core.publish("order.created", {}, "shop").event_id
    core.publish("order.paid", {}, "shop")
    last = core.publish("order.created", {}, "shop").event_id
    assert [e["id"] for e in events_of(core, "--type", "order.created")] == [last, first]
    assert [e["id"] for e in events_of(core, "--oldest", "--limit", "1")] == [first]
    assert len(events_of(core, "--since", "1h")) == 3
    assert events_of(core, "--until", "1h") == []
    assert events_of(core, "--since", "2999-01-01T00:00:00Z") == []


def test_events_pages_on_with_the_cursor(core: Core) -> None:
    ids = [core.publish("order.created", {"n": n}, "shop").event_id for n in range(5)]
    first = run_json(core, "events", "--limit", "2")
    second = run_json(core, "events", "--limit", "2", "--cursor", first["next_cursor"])
    third = run_json(core, "events", "--limit", "2", "--cursor", second["next_cursor"])
    pages = [first, second, third]
    assert [e["id"] for page in pages for e in page["events"]] == ids[::-1]
    assert third["next_cursor"] is None
    assert "--cursor" in run(core, "events", "--limit", "2").stdout
    assert_one_line_error(run(core, "events", "--cursor", "nope"), 2, "cursor")


def test_events_at_80_columns_keep_type_status_and_handlers_readable(core: Core) -> None:
    event_id = core.publish("customer.churn_risk", {"customer": "c1"}, "crm").event_id
    queue(core.deliveries, event_id, "CustomerAgent")
    for env in ({"COLUMNS": "80"}, {"COLUMNS": "80", "TERM": "dumb"}):
        result = CliRunner().invoke(main, ["events"], obj=core, env=env)
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert all(len(line) <= 80 for line in lines), lines
        assert "…" not in result.stdout
        for needed in (event_id, "customer.churn_risk", "CustomerAgent=queued"):
            assert needed in result.stdout
        head = next(line for line in lines if event_id in line)
        assert core.get_event(event_id).status in head.split(), head


def test_events_table_shows_each_event(core: Core) -> None:
    event_id = core.publish("order.created", {}, "shop").event_id
    result = run(core, "events")
    assert result.exit_code == 0
    assert event_id in result.stdout
    assert "order.created" in result.stdout
    assert "pending" in result.stdout


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["events", "--since", "yesterday"], ["--since", "is not a time"]),
        (["events", "--limit", "0"], ["--limit"]),
        (["events", "--bogus"], ["--bogus"]),
        (["events", "--type", "NotAType"], ["type"]),
        (["event"], ["EVENT_ID"]),
        (["nonsense"], ["nonsense"]),
        (["replay", "--until", "soon"], ["--until"]),
        (["dlq", "discard", "x"], ["--reason"]),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(
    core: Core, args: list[str], fragments: list[str]
) -> None:
    assert_one_line_error(run(core, *args), 2, *fragments)


def test_an_unknown_event_id_is_one_line_and_exit_3(core: Core) -> None:
    assert_one_line_error(run(core, "event", "nope"), 3, "nope")


# -- one event --------------------------------------------------------------------------------


def agent_event(core: Core) -> str:
    event_id = core.publish("alert.triggered", {"severity": "high"}, "monitoring").event_id
    queue(core.deliveries, event_id, "AlertResponder")
    start(core.deliveries, event_id, "AlertResponder")
    finish(
        core.deliveries,
        event_id,
        "AlertResponder",
        Status.SUCCEEDED,
        "attempt 1 succeeded",
        outcome=AGENT_OUTCOME,
    )
    return event_id


def test_event_json_carries_deliveries_and_the_agents_outcome(core: Core) -> None:
    event_id = agent_event(core)
    shown = run_json(core, "event", event_id)
    assert shown["id"] == event_id
    assert shown["status"] == "succeeded"
    (delivery,) = shown["deliveries"]
    assert delivery["handler"] == "AlertResponder"
    assert [change["status"] for change in delivery["history"]] == [
        "queued",
        "running",
        "succeeded",
    ]
    assert delivery["outcome"] == AGENT_OUTCOME


def test_event_full_shows_the_system_prompt_the_enrichment_and_tool_results_whole(
    messages_api: MessagesAPI, make_agent: Any, core: Core
) -> None:
    handler = make_agent(
        instructions="Page the team that owns the burning service.",
        pipeline=[{"name": "owner", "enrich": "tests.agent_stages:owner"}],
        tools=["tests.agent_tools:lookup_service"],
    )
    event_id = core.publish("alert.triggered", {"service": "checkout"}, "monitoring").event_id
    queue(core.deliveries, event_id, "Responder")
    start(core.deliveries, event_id, "Responder")
    lookup = tool_use("lookup_service", {"service": "checkout"})
    messages_api.script(message(lookup), message(text("Paged team-payments.")))
    info = DeliveryInfo(f"{event_id}:Responder", "Responder", 1, 1, "t1")
    outcome = handler(core.get_event(event_id).event.delivered(info))
    finish(core.deliveries, event_id, "Responder", Status.SUCCEEDED, "done", outcome=outcome)

    compact, full = run(core, "event", event_id), run(core, "event", event_id, "--full")

    assert compact.exit_code == 0 and full.exit_code == 0, full.output
    expected = (
        "Page the team that owns the burning service.",  # the system prompt
        '<event_payload> { "service": "checkout" } </event_payload>',  # the first message
        '<enriched> { "owner": { "team": "team-payments" } } </enriched>',
        outcome["tool_calls"][0]["result"],  # a tool result, whole
    )
    assert [part in unwrapped(full.stdout) for part in expected] == [True] * 4
    assert [part in unwrapped(compact.stdout) for part in expected] == [False] * 4


def unwrapped(output: str) -> str:
    """Rich output as one line of words: panel borders and wrapping taken out."""
    return " ".join(" ".join(line.strip("│ ").split()) for line in output.splitlines())


def test_event_shows_tool_calls_and_token_usage(core: Core) -> None:
    result = run(core, "event", agent_event(core))
    assert result.exit_code == 0, result.output
    for shown in (
        "AlertResponder",
        "claude-sonnet-5-5",
        "end_turn",
        "publish_event",
        "delete_everything (refused)",
        "in 1234",
        "out 56",
        "cache read 789",
        "Paged the on-call engineer.",
        '"severity": "high"',
        "attempt 1 succeeded",
        "attempts",  # the table of every attempt kept: run, attempt, worker, time
        "w1",
        "input tokens 1234",  # totals over every attempt
    ):
        assert shown in result.stdout


def test_an_event_past_the_causation_depth_limit_shows_blocked_in_event_and_stats(
    core: Core,
) -> None:
    cause = core.publish("chain.started", {}, "test").event_id
    for _ in range(core.settings.max_causation_depth + 1):
        cause = core.publish("chain.continued", {}, "agent", causation_id=cause).event_id

    shown = run(core, "event", cause)
    stats = run_json(core, "stats")

    assert shown.exit_code == 0, shown.output
    assert "blocked" in shown.stdout and "causation depth 9 is over the limit of 8" in shown.stdout
    assert stats["statuses"]["blocked"] == 1 and stats["events"]["chain.continued"]["blocked"] == 1
    assert cause not in core.store.pending(older_than=0)


# -- publish ----------------------------------------------------------------------------------


def test_publish_reads_the_payload_from_stdin(core: Core) -> None:
    published = run_json(core, "publish", "order.created", input='{"total": 12}')
    stored = core.get_event(published["event_id"])
    assert (stored.event.payload, stored.event.source) == ({"total": 12}, "cli")
    assert published["duplicate"] is False


def test_publish_takes_source_and_subject(core: Core) -> None:
    result = run(
        core, "publish", "order.created", "--source", "shop", "--subject", "o-1", input="[1, 2]"
    )
    assert result.exit_code == 0, result.output
    event_id = result.stdout.split()[-1]
    stored = core.get_event(event_id).event
    assert (stored.source, stored.subject, stored.payload) == ("shop", "o-1", [1, 2])


@pytest.mark.parametrize(
    ("args", "payload", "fragment"),
    [
        (["publish", "order.created"], "{not json", "payload: is not JSON"),
        (["publish", "order.created"], "  ", "payload: is empty"),
        (["publish", "Order"], "{}", "type"),
        (["publish", "order.created", "--source", ""], "{}", "source"),
    ],
)
def test_publish_refuses_bad_input_in_one_line(
    core: Core, args: list[str], payload: str, fragment: str
) -> None:
    assert_one_line_error(run(core, *args, input=payload), 2, fragment)
    assert core.history() == []


# -- dead letters -----------------------------------------------------------------------------


def test_dlq_list_show_and_discard(core: Core) -> None:
    event_id = core.publish("order.created", {}, "shop").event_id
    dead(core, event_id)
    other = core.publish("order.paid", {}, "shop").event_id
    dead(core, other, "tests.handlers:flaky")
    listed = run_json(core, "dlq", "list")
    assert {item["event_id"] for item in listed["dead_letters"]} == {event_id, other}
    assert listed["more"] == 0
    only = run_json(core, "dlq", "list", "--type", "order.paid")
    assert [item["handler"] for item in only["dead_letters"]] == ["tests.handlers:flaky"]
    assert run_json(core, "dlq", "list", "--limit", "1")["more"] == 1
    assert "1 more: raise --limit" in run(core, "dlq", "list", "--limit", "1").stdout
    letter_id = f"{event_id}:tests.handlers:fail"
    assert run_json(core, "dlq", "show", letter_id)["error"] == "this handler always fails"
    shown = run(core, "dlq", "show", letter_id)
    assert "PermanentError: boom" in shown.stdout
    table = run(core, "dlq", "list")
    assert letter_id in table.stdout
    assert run_json(core, "dlq", "discard", letter_id, "--reason", "fixed by hand") == {
        "discarded": letter_id,
        "reason": "fixed by hand",
    }
    assert [item["event_id"] for item in run_json(core, "dlq", "list")["dead_letters"]] == [other]
    assert "more" not in run(core, "dlq", "list").stdout
    history = core.get_event(event_id).deliveries["tests.handlers:fail"]["history"]
    assert history[-1]["reason"] == "discarded: fixed by hand"


def test_dlq_show_prints_the_annotation_a_triage_left(core: Core) -> None:
    event_id = core.publish("order.created", {}, "shop").event_id
    letter_id = dead(core, event_id).id
    core.annotate_dead_letter(
        letter_id, "the payload lacks a customer", by="DeadLetterTriager", category="bad_input"
    )

    shown = " ".join(run(core, "dlq", "show", letter_id).stdout.split())

    assert "annotation" in shown
    for fragment in ("DeadLetterTriager", "the payload lacks a customer", "bad_input"):
        assert fragment in shown
    assert run_json(core, "dlq", "show", letter_id)["annotation"]["category"] == "bad_input"


def test_dlq_show_of_an_unknown_id_exits_3(core: Core) -> None:
    assert_one_line_error(run(core, "dlq", "show", "nope:x"), 3, "nope:x")


def test_commands_that_need_a_broker_say_so_in_one_line(core: Core) -> None:
    event_id = core.publish("order.created", {}, "shop").event_id
    dead(core, event_id)
    result = run(core, "dlq", "retry", f"{event_id}:tests.handlers:fail")
    assert_one_line_error(result, 5, "no broker is configured")
    replay = run(core, "replay", "--handler", "tests.handlers:succeed")
    assert_one_line_error(replay, 5, "no broker is configured")


# -- replay and subscriptions -----------------------------------------------------------------


def test_replay_dry_run_lists_what_would_be_delivered(core: Core) -> None:
    ids = [core.publish("order.created", {}, "shop").event_id for _ in range(2)]
    core.publish("order.paid", {}, "shop")
    core.subscribe(["order.created"], "tests.handlers:succeed")
    report = run_json(core, "replay", "--dry-run")
    assert report["dry_run"] is True
    assert [(i["event_id"], i["handler"]) for i in report["items"]] == [
        (event_id, "tests.handlers:succeed") for event_id in ids
    ]
    forced = run_json(core, "replay", "--dry-run", "--handler", "tests.handlers:flaky")
    assert (forced["events"], forced["deliveries"]) == (3, 3)
    limited = run(core, "replay", "--dry-run", "--type", "order.created", "--limit", "1")
    assert "would replay 1 deliveries of 1 of 2 events" in limited.stdout
    assert "1 more matched: run again with --since" in limited.stdout
    assert ids[0] in limited.stdout


def test_replay_refuses_an_unknown_handler(core: Core) -> None:
    result = run(core, "replay", "--dry-run", "--handler", "nobody:here")
    assert_one_line_error(result, 2, "nobody:here")


def test_subscriptions_subscribe_list_and_unsubscribe(core: Core) -> None:
    assert run_json(core, "subscriptions") == []
    created = run_json(
        core,
        "subscriptions",
        "subscribe",
        "order.*",
        "refund.*",
        "--handler",
        "tests.handlers:succeed",
    )
    assert [item["pattern"] for item in created] == ["order.*", "refund.*"]
    listed = run_json(core, "subscriptions")
    assert {(s["pattern"], s["handler"]) for s in listed} == {
        ("order.*", "tests.handlers:succeed"),
        ("refund.*", "tests.handlers:succeed"),
    }
    assert "refund.*" in run(core, "subscriptions").stdout
    run_json(core, "subscriptions", "unsubscribe", "order.*", "--handler", "tests.handlers:succeed")
    assert [s["pattern"] for s in core.subscriptions()] == ["refund.*"]


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["subscribe", "order.*", "--handler", "no.such:thing"], 2, "no.such:thing"),
        (["subscribe", "Bad Pattern", "--handler", "tests.handlers:succeed"], 2, "event_types"),
        (["subscribe", "--handler", "tests.handlers:succeed"], 2, "PATTERNS"),
        (["unsubscribe", "order.*", "--handler", "tests.handlers:succeed"], 3, "not subscribed"),
    ],
)
def test_subscription_mistakes_are_one_line(
    core: Core, args: list[str], code: int, fragment: str
) -> None:
    assert_one_line_error(run(core, "subscriptions", *args), code, fragment)


# -- stats, mcp, help -------------------------------------------------------------------------


def test_stats_counts_events_by_type_and_status_and_dead_letters(core: Core) -> None:
    core.publish("order.created", {}, "shop")
    paid = core.publish("order.paid", {}, "shop").event_id
    core.acknowledge(paid, "ignored")
    dead(core, paid)
    core.acknowledge(paid, "ignored")
    stats = run_json(core, "stats")
    assert stats["events"] == {"order.created": {"pending": 1}, "order.paid": {"ignored": 1}}
    assert (stats["stored"], stats["dead_letters"]) == (2, 1)
    assert "payment.succeeded" in stats["unrouted_types"]
    table = run(core, "stats").stdout
    assert "order.paid" in table
    assert "dead letters" in table
    assert "no route sends to a handler:" in table and "payment.succeeded" in table


def test_stats_read_two_fields_of_each_event_never_its_payload(
    make_settings: Callable[..., Settings], own_redis: tuple[RedisServer, redis.Redis]
) -> None:
    server, counter = own_redis
    core = Core(make_settings(redis_url=server.url), None)
    for _ in range(20):
        core.publish("order.created", {"blob": "x" * 50_000}, "shop")

    with cost(counter) as spent:
        stats = core.stats()

    assert stats["events"] == {"order.created": {"pending": 20}}
    # Two fields of each event (HMGET), where each event's whole record, its deliveries
    # and its outcomes were read (three HGETALLs an event); the few left are the
    # subscriptions' and flow control's, whatever the number of events.
    assert spent.of("hmget") == 20 and spent.of("hgetall") < 20, spent


def test_stats_name_the_types_agents_publish_that_nothing_consumes(
    core: Core, make_settings: Callable[..., Settings], client: Any, tmp_path: Path
) -> None:
    from tasks import handlers

    routes_path = tmp_path / "routes.yaml"
    routes_path.write_text("routes:\n  - events: [alert.triggered]\n    handler: AlertResponder\n")
    settings = make_settings(routes_path=routes_path)
    registry, routes = handlers(settings)
    bare = Core(settings, client, routes=routes, handlers=registry)

    table = " ".join(run(bare, "stats").stdout.split())

    assert "types agents publish that nothing consumes: " in table
    assert "notification.requested" in table and "alert.escalated" in table
    assert "nothing consumes" not in run(core, "stats").stdout  # the shipped routes consume all


#: What each listing must show whole at 80 columns, given ``listed_at_80_columns``'s store.
AT_80_COLUMNS = {
    "dlq": ["{letter}", "customer.subscription_cancelled", "PermanentError"],
    "stats": ["customer.subscription_cancelled", *ACK_STATUSES, "pending"],
    "subscriptions": ["customer.subscription_cancelled", "tests.handlers:reports_its_delivery"],
}


@pytest.mark.parametrize("command", [["dlq", "list"], ["stats"], ["subscriptions"]])
def test_listings_at_80_columns_keep_every_line_within_it_and_cut_no_id(
    core: Core, command: list[str]
) -> None:
    kind = "customer.subscription_cancelled"  # long, as a column narrowed to fit would cut it
    ids = [core.publish(kind, {}, "stripe").event_id for _ in ACK_STATUSES]
    for event_id, ack in zip(ids, ACK_STATUSES, strict=True):
        core.acknowledge(event_id, ack)
    letter = dead(core, core.publish(kind, {}, "stripe").event_id)
    core.publish(kind, {}, "stripe")  # one left pending
    core.subscribe([kind], "tests.handlers:reports_its_delivery")
    result = CliRunner().invoke(main, command, obj=core, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert "…" not in result.stdout, result.stdout
    for needed in AT_80_COLUMNS[command[0]]:
        assert needed.format(letter=letter.id) in result.stdout, (needed, result.stdout)


def test_mcp_refuses_a_public_address_without_a_token(core: Core) -> None:
    result = run(core, "mcp", "--transport", "http", "--host", ALL_INTERFACES, EDA_MCP_TOKEN="")
    assert_one_line_error(result, 2, "without a token", "EDA_MCP_TOKEN")


def test_mcp_refuses_a_short_token(core: Core) -> None:
    # No core handed in: the command reads its settings, as `eda mcp` does at start.
    environment = {**WIDE, "EDA_MCP_TOKEN": "short"}
    result = CliRunner().invoke(main, ["mcp", "--transport", "http"], env=environment)
    assert_one_line_error(result, 2, "EDA_MCP_TOKEN", "at least 16")
    assert "short" not in result.stderr.replace("EDA_MCP_TOKEN", "")


def test_mcp_refuses_a_malformed_gantz_yaml_naming_tool_and_field(
    core: Core, tmp_path: Path
) -> None:
    path = tmp_path / "gantz.yaml"
    path.write_text("tools: [{name: t, description: d, script: {command: x, timeot: 1}}]")
    result = run(core, "mcp", "--gantz", str(path))
    assert_one_line_error(result, 2, f"{path}:1: tools[0] (t).script.timeot", "not a known key")


def test_help_lists_every_command(core: Core) -> None:
    result = run(core, "--help")
    assert result.exit_code == 0
    for command in ("events", "event", "publish", "dlq", "replay", "subscriptions", "stats", "mcp"):
        assert f"  {command} " in result.stdout


def test_the_console_script_runs_against_the_configured_store(core: Core) -> None:
    settings = core.settings
    env = {**os.environ, "REDIS_URL": str(settings.redis_url), "EDA_PREFIX": settings.prefix}
    eda = Path(sys.executable).parent / "eda"
    published = subprocess.run(
        [str(eda), "publish", "order.created", "--json"],
        input='{"a": 1}',
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    event_id = json.loads(published.stdout)["event_id"]
    assert core.get_event(event_id).event.payload == {"a": 1}
    bad = subprocess.run(
        [str(eda), "events", "--since", "never"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (bad.returncode, len(bad.stderr.splitlines())) == (2, 1)


# -- interruption -----------------------------------------------------------------------------


def test_ctrl_c_is_deferred_to_the_next_checkpoint() -> None:
    previous = signal.getsignal(signal.SIGINT)
    with Interrupts() as interrupts:
        os.kill(os.getpid(), signal.SIGINT)
        wait_for(lambda: interrupts.requested, timeout=2)
        with pytest.raises(KeyboardInterrupt):
            interrupts.checkpoint()
    assert signal.getsignal(signal.SIGINT) is previous


# -- with a worker ----------------------------------------------------------------------------


def succeeded(core: Core, event_id: str) -> bool:
    return core.get_event(event_id).status == "succeeded"


def test_dlq_retry_and_retry_all_deliver_again(
    live: Core, unique_type: Callable[[str], str]
) -> None:
    event_type = unique_type("dlq")
    live.subscribe([event_type], "tests.handlers:flaky")
    ids = [
        live.publish(event_type, {"fail_times": 1, "mode": "permanent"}, "t").event_id
        for _ in range(3)
    ]

    def dead() -> list[DeadLetter]:
        return live.dead_letter_list(10, event_type)

    wait_for(lambda: len(dead()) == 3)
    retried = run_json(live, "dlq", "retry", f"{ids[0]}:tests.handlers:flaky")
    assert retried["event_id"] == ids[0]
    result = run_json(live, "dlq", "retry-all", "--type", event_type)
    assert (result["retried"], result["interrupted"]) == (2, False)
    for event_id in ids:
        wait_for(partial(succeeded, live, event_id))
    assert dead() == []


def test_replay_redelivers_and_ctrl_c_stops_between_deliveries(
    live: Core, live_settings: Settings, unique_type: Callable[[str], str]
) -> None:
    import tasks

    slow = tasks.connect(live_settings.model_copy(update={"replay_rate": 10.0}))
    event_type = unique_type("replay")
    ids = [slow.publish(event_type, {"n": n}, "t").event_id for n in range(20)]
    wait_for(lambda: all(slow.get_event(e).status == "unrouted" for e in ids))
    timer = threading.Timer(0.35, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    result = run(
        slow, "replay", "--type", event_type, "--handler", "tests.handlers:succeed", "--json"
    )
    timer.join()
    assert result.exit_code == 130, result.output
    report = json.loads(result.stdout)
    assert report["interrupted"] is True
    assert 1 <= report["deliveries"] < 20
    replayed = [item["event_id"] for item in report["items"]]
    assert replayed == ids[: len(replayed)]
    for event_id in ids:  # every replayed delivery ran; none was left queued
        stored = slow.get_event(event_id)
        if event_id in replayed:
            wait_for(partial(succeeded, slow, event_id))
        else:
            assert stored.deliveries == {}


def test_a_reader_that_stops_early_ends_the_command_quietly(core: Core) -> None:
    import os
    import subprocess
    import sys

    for n in range(400):
        core.publish("pipe.checked", {"n": n, "padding": "x" * 200}, "test")
    environment = {
        **os.environ,
        "REDIS_URL": str(core.settings.redis_url),
        "EDA_PREFIX": core.settings.prefix,
    }
    command = [sys.executable, "-m", "scripts.cli", "events", "--json", "--limit", "400"]
    with subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        process.stdout.readline()
        process.stdout.close()
        stderr = process.stderr.read().decode()
        process.wait(timeout=30)
    assert stderr == ""  # no traceback, no BrokenPipeError: the command just stops


# -- limits say what they left ----------------------------------------------------------------


def many_dead(core: Core, events: list[Event], handler: str) -> None:
    """Dead deliveries with their letters for many events, in three pipelines."""
    steps = core.deliveries
    steps.apply_many(
        [Change(e.id, handler, "dispatch", Status.QUEUED, "d", task_id="t") for e in events]
    )
    steps.apply_many([Change(e.id, handler, "start", Status.RUNNING, task_id="t") for e in events])
    steps.apply_many(
        [
            Change(
                e.id,
                handler,
                "finish",
                Status.DEAD,
                "boom",
                task_id="t",
                options={"attempt": 1},
                letter=letter_for(e, handler, "boom", "t"),
            )
            for e in events
        ]
    )


def unpaced(settings: Settings, client: Any, broker_url: str) -> Core:
    """A core that enqueues to ``broker_url`` as fast as it can."""
    from tasks import app, handlers
    from tasks.enqueue import CeleryEnqueuer

    registry, routes = handlers(settings)
    fast = settings.model_copy(update={"replay_rate": 1_000_000.0})
    return Core(fast, client, CeleryEnqueuer(app, broker_url), routes, registry)


def stored(core: Core, count: int) -> list[Event]:
    events = [Event.create(type="bulk.thing", source="t") for _ in range(count)]
    for event in events:
        core.store.publish(event)
    return events


def test_replay_and_retry_all_over_2500_say_what_is_left_and_retry_all_can_empty_the_queue(
    settings: Settings, client: Any, idle_broker: Any
) -> None:
    core = unpaced(settings, client, idle_broker)
    handler = "tests.handlers:succeed"
    events = stored(core, 2500)

    replayed: list[str] = []
    first = run_json(core, "replay", "--handler", handler)
    assert (first["events"], first["matched"], first["left"]) == (1000, 2500, 1500)
    replayed += [item["event_id"] for item in first["items"]]
    since = first["next_since"]
    while since:
        report = run_json(core, "replay", "--handler", handler, "--since", since)
        replayed += [item["event_id"] for item in report["items"]]
        since = report["next_since"]
    assert sorted(replayed) == sorted(e.id for e in events)  # each once, none left out
    table = run(core, "replay", "--handler", handler, "--limit", "2000", "--dry-run").stdout
    assert "500 more matched: run again with --since" in table

    many_dead(core, events, handler)
    batch = run_json(core, "dlq", "retry-all")
    assert (batch["retried"], batch["left"]) == (1000, 1500)
    said = run(core, "dlq", "retry-all", "--limit", "500").stdout
    assert "retried 500 dead letters" in said and "1000 matching dead letters left" in said
    rest = run_json(core, "dlq", "retry-all", "--until-empty")
    assert (rest["retried"], rest["left"]) == (1000, 0)
    assert core.dead_letters.count() == 0


def test_one_retry_all_until_empty_empties_a_queue_of_2500_letters(
    settings: Settings, client: Any, idle_broker: Any
) -> None:
    core = unpaced(settings, client, idle_broker)
    events = stored(core, 2500)
    many_dead(core, events, "tests.handlers:succeed")

    emptied = run_json(core, "dlq", "retry-all", "--until-empty")

    assert (emptied["retried"], emptied["left"], emptied["interrupted"]) == (2500, 0, False)
    assert sorted(item["event_id"] for item in emptied["items"]) == sorted(e.id for e in events)
    assert core.dead_letters.count() == 0
