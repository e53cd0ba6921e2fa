"""agents.yaml: the shipped agents, registration, and errors naming file, agent and field."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import agents
from agents import load_definitions, register_agents
from eda.core import Core
from eda.errors import InvalidInput
from eda.event import Event
from eda.handlers import CODE, Handler, Skip
from eda.retry import RetryOverride
from eda.routes import load_routes
from eda.settings import Settings
from tasks import connect, handlers
from tests.agent_fixtures import dry_run, stored_event
from tests.workers import ROOT, Worker

__all__ = ["dry_run"]  # a fixture used by the tests below


def test_the_shipped_agents_load_with_their_tools_and_pipeline(settings: Settings) -> None:
    specs = load_definitions(settings)

    assert list(specs) == ["AlertResponder", "CodeReviewer", "CustomerAgent", "DeadLetterTriager"]
    alert = specs["AlertResponder"]
    assert [(s.name, s.kind) for s in alert.stages] == [
        ("high_severity", "filter"),
        ("recent_alerts", "enrich"),
    ]
    assert list(alert.tools) == ["get_event_history", "publish_event", "acknowledge_event"]
    deciders = [spec for name, spec in specs.items() if name != "DeadLetterTriager"]
    assert all(spec.model is None for spec in deciders)  # the project-wide default
    assert specs["DeadLetterTriager"].model == "claude-haiku-5-5"  # triage only
    assert (alert.max_turns, alert.max_tokens, alert.token_budget) == (8, 2048, 200_000)


def test_the_composition_root_registers_every_agent_of_its_settings(settings: Settings) -> None:
    registry, _ = handlers(settings)
    assert {"AlertResponder", "CodeReviewer", "CustomerAgent"} <= set(registry.names())
    assert registry.resolve("AlertResponder").__name__ == "AlertResponder"
    assert "AlertResponder" not in CODE.names()  # importing agents registered nothing
    assert agents.__name__ == "agents"


def test_registering_the_agents_does_not_import_the_sdk() -> None:
    probe = "import sys, agents; print('anthropic' in sys.modules)"
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == "False"  # web and script processes load the agents too


def test_register_agents_hands_each_agent_to_the_register_callable(settings: Settings) -> None:
    registered: dict[str, Handler] = {}

    names = register_agents(lambda name, fn, *_, **__: registered.__setitem__(name, fn), settings)

    shipped = ["AlertResponder", "CodeReviewer", "CustomerAgent", "DeadLetterTriager"]
    assert names == shipped == list(registered)
    assert all(callable(handler) for handler in registered.values())


def test_every_event_the_routes_file_sends_an_agent_is_in_its_instructions(
    settings: Settings,
) -> None:
    specs = load_definitions(settings)
    registry, _ = handlers(settings)
    routes = load_routes(settings.routes_path, lambda name: registry.known(name, trusted=True))

    sent = [(r.handler, p) for r in routes if r.handler in specs for p in r.patterns]

    assert ("CustomerAgent", "payment.failed") in sent
    assert [(h, p) for h, p in sent if p not in specs[h].instructions] == []


def test_the_shipped_alert_responder_skips_low_severity_and_runs_dry_on_high(
    settings: Settings, core: Core, dry_run: None
) -> None:
    registered: dict[str, Handler] = {}
    register_agents(lambda name, fn, *_, **__: registered.__setitem__(name, fn), settings)
    responder = registered["AlertResponder"]

    with pytest.raises(Skip) as skipped:
        responder(stored_event(core, "alert.triggered", {"severity": "low"}))
    outcome: Any = responder(stored_event(core, "alert.triggered", {"severity": "critical"}))

    assert skipped.value.stage == "high_severity"
    assert outcome["outcome"] == "dry_run" and outcome["model"] == "claude-sonnet-5-5"
    assert "<enriched>" in outcome["request"]["messages"][0]["content"][0]["text"]


def test_the_default_model_is_one_setting(
    make_settings: Callable[..., Settings], core: Core, dry_run: None
) -> None:
    registered: dict[str, Handler] = {}
    register_agents(
        lambda name, fn, *_, **__: registered.__setitem__(name, fn),
        make_settings(agent_model="claude-haiku-5-5"),
    )

    outcome: Any = registered["CodeReviewer"](stored_event(core, "code.pushed", {"ref": "main"}))

    assert outcome["model"] == "claude-haiku-5-5"


def agent(**fields: Any) -> dict[str, Any]:
    return {"name": "Broken", **fields}


@pytest.mark.parametrize(
    ("document", "field", "reason"),
    [
        ({"agents": [agent(instructions="")]}, "agents[0] (Broken).instructions", "is required"),
        (
            {"agents": [agent(tools=["nope"])]},
            "agents[0] (Broken).tools[0]",
            "no tool 'nope' in gantz.yaml",
        ),
        (
            {"agents": [agent(tools=["tests.agent_tools:not_a_tool"])]},
            "agents[0] (Broken).tools[0]",
            "is not a PythonTool",
        ),
        (
            {"agents": [agent(tools=["tests.agent_tools:missing"])]},
            "agents[0] (Broken).tools[0]",
            "cannot be imported",
        ),
        (
            {"agents": [agent(tools=["tests.agent_tools:bad_schema_tool"])]},
            "agents[0] (Broken).tools[0]",
            "invalid input schema",
        ),
        (
            {"agents": [agent(tools=["get_event_history", "get_event_history"])]},
            "agents[0] (Broken).tools[1]",
            "listed twice",
        ),
        ({"agents": [agent(max_turns=0)]}, "agents[0] (Broken).max_turns", "from 1 to 50"),
        ({"agents": [agent(max_tokens="lots")]}, "agents[0] (Broken).max_tokens", "whole number"),
        (
            {"agents": [agent(events=["alert.triggered"])]},
            "agents[0] (Broken).events",
            "routes belong in the routes file",
        ),
        ({"agents": [agent(modle="x")]}, "agents[0] (Broken).modle", "is not a known key"),
        ({"agents": [agent(name="bad name")]}, "agents[0] (bad name).name", "must be a letter"),
        ({"agents": [agent(model=" ")]}, "agents[0] (Broken).model", "must be a model id"),
        (
            {"agents": [agent(retry={"max_retries": -1})]},
            "agents[0] (Broken).retry.max_retries",
            "must be >= 0",
        ),
        (
            {"agents": [agent(retry={"backoff": 0})]},
            "agents[0] (Broken).retry.backoff",
            "must be > 0",
        ),
        (
            {"agents": [agent(retry={"tries": 3})]},
            "agents[0] (Broken).retry.tries",
            "is not a known key",
        ),
        (
            {
                "agents": [
                    agent(pipeline=[{"name": "s", "filter": {}}, {"name": "s", "filter": {}}])
                ]
            },
            "agents[0] (Broken).pipeline[1] (s).name",
            "'s' is used twice",
        ),
        ({"agents": [agent(), agent()]}, "agents[1] (Broken).name", "is used twice"),
        (
            {"agents": [agent(pipeline=[{"name": "s", "filter": {}, "enrich": "a.b:c"}])]},
            "agents[0] (Broken).pipeline[0] (s)",
            "exactly one of",
        ),
        (
            {"agents": [agent(pipeline=[{"name": "s", "filter": {"severity": {"like": "x"}}}])]},
            "agents[0] (Broken).pipeline[0] (s).filter.severity",
            "unknown condition 'like'",
        ),
        (
            {"agents": [agent(pipeline=[{"name": "s", "enrich": "nowhere.at_all:fn"}])]},
            "agents[0] (Broken).pipeline[0] (s).enrich",
            "cannot be imported",
        ),
        (
            {"agents": [agent(pipeline=[{"filter": {}}])]},
            "agents[0] (Broken).pipeline[0].name",
            "is required",
        ),
        (
            {"defaults": {"max_turns": 100}, "agents": [agent()]},
            "defaults.max_turns",
            "from 1 to 50",
        ),
        ({"agents": []}, "agents", "is required"),
        (
            {"agents": [agent(budget={"when_spent": "dead"})]},
            "agents[0] (Broken).budget",
            "a budget needs tokens_per_day, cost_per_day or both",
        ),
        (
            {"agents": [agent(budget={"cost_per_day": 0})]},
            "agents[0] (Broken).budget.cost_per_day",
            "must be > 0",
        ),
    ],
)
def test_mistakes_in_the_agents_file_name_the_file_agent_and_field(
    document: dict[str, Any],
    field: str,
    reason: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
) -> None:
    entries = [{"instructions": "x", **entry} for entry in document["agents"]]
    path = tmp_path / "agents.yaml"
    path.write_text(yaml.safe_dump({**document, "agents": entries}, sort_keys=False))

    with pytest.raises(InvalidInput) as raised:
        load_definitions(make_settings(agents_path=path))

    assert re.fullmatch(rf"{re.escape(str(path))}:\d+: {re.escape(field)}", raised.value.field)
    assert reason in raised.value.reason


@pytest.fixture
def agents_file(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> Callable[[str], Settings]:
    """Settings whose agents file holds the text given."""

    def write(text: str) -> Settings:
        path = tmp_path / "agents.yaml"
        path.write_text(text)
        return make_settings(agents_path=path)

    return write


def test_a_mistake_names_the_line_of_the_field_at_fault(
    tmp_path: Path, agents_file: Callable[[str], Settings]
) -> None:
    path = tmp_path / "agents.yaml"
    settings = agents_file(
        "agents:\n"
        "  - name: Calm\n"
        "    instructions: x\n"
        "  - name: Hasty\n"
        "    instructions: x\n"
        "    retry:\n"
        "      max_retries: -1\n"
    )

    with pytest.raises(InvalidInput) as raised:
        load_definitions(settings)

    assert str(raised.value) == f"{path}:7: agents[1] (Hasty).retry.max_retries: must be >= 0"


def test_an_agent_carries_its_retry_policy(agents_file: Callable[[str], Settings]) -> None:
    settings = agents_file(
        "agents:\n"
        "  - name: Careful\n"
        "    instructions: x\n"
        "    retry: {max_retries: 2, backoff_max: 30, permanent: [KeyError]}\n"
        "  - name: Plain\n"
        "    instructions: x\n"
    )

    specs = load_definitions(settings)

    assert specs["Careful"].retry == RetryOverride(
        max_retries=2, backoff_max=30, permanent=("KeyError",)
    )
    assert specs["Plain"].retry is None


def test_a_cost_budget_of_a_model_without_a_price_is_refused_at_start(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    path = tmp_path / "agents.yaml"
    path.write_text(
        "agents:\n"
        "  - name: Thrifty\n"
        "    instructions: x\n"
        "    model: claude-haiku-5-5\n"
        "    budget: {cost_per_day: 5}\n"
    )
    unpriced = make_settings(agents_path=path, model_prices={"other": {"input": 1, "output": 5}})
    priced = make_settings(
        agents_path=path, model_prices={"claude-haiku-5-5": {"input": 1, "output": 5}}
    )

    with pytest.raises(InvalidInput) as raised:
        register_agents(lambda *_, **__: None, unpriced)

    assert raised.value.field == f"{path}: Thrifty.budget.cost_per_day"
    assert raised.value.reason == "model 'claude-haiku-5-5' has no price in EDA_MODEL_PRICES"
    assert register_agents(lambda *_, **__: None, priced) == ["Thrifty"]


def test_an_agent_that_still_lists_events_is_refused_pointing_at_the_routes_file(
    tmp_path: Path, agents_file: Callable[[str], Settings]
) -> None:
    settings = agents_file("agents:\n  - name: Old\n    instructions: x\n    events: [a.b]\n")

    with pytest.raises(InvalidInput) as raised:
        load_definitions(settings)

    assert raised.value.field == f"{tmp_path / 'agents.yaml'}:4: agents[0] (Old).events"
    assert "routes file" in raised.value.reason and "EDA_ROUTES" in raised.value.reason


def test_an_agents_file_that_is_not_yaml_is_refused_with_its_path(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    path = tmp_path / "agents.yaml"
    path.write_text("agents: [unclosed\n")

    with pytest.raises(InvalidInput, match="is not valid YAML") as raised:
        load_definitions(make_settings(agents_path=path))

    assert raised.value.field == f"{path}:2"


#: An agents file whose only agent asks for no turns at all (line 4).
NO_TURNS = "agents:\n  - name: Broken\n    instructions: x\n    max_turns: 0\n"


def test_a_broken_agents_file_stops_connect_naming_the_line_the_agent_and_the_field(
    tmp_path: Path, agents_file: Callable[[str], Settings]
) -> None:
    settings = agents_file(NO_TURNS)

    with pytest.raises(InvalidInput) as raised:
        connect(settings)

    assert raised.value.field == f"{tmp_path / 'agents.yaml'}:4: agents[0] (Broken).max_turns"


def test_a_worker_with_a_broken_agents_file_refuses_to_start_and_says_where(
    tmp_path: Path,
) -> None:
    path = tmp_path / "agents.yaml"
    path.write_text(NO_TURNS)

    with pytest.raises(RuntimeError) as failure:
        Worker(tmp_path / "bad.log", {"EDA_AGENTS": str(path)})

    where = f"{path}:4: agents[0] (Broken).max_turns"
    assert f"eda: configuration error: {where}: must be a whole number" in str(failure.value)


def test_connect_runs_the_agents_of_the_agents_file_its_settings_name(
    make_settings: Any, dry_run: None
) -> None:
    from eda.delivery import Outcome, run_attempt
    from tests.lifecycle import queue

    settings = make_settings(
        agents_path=ROOT / "tests" / "agents.yaml", routes_path=ROOT / "tests" / "routes.yaml"
    )
    core = connect(settings)
    assert core.handlers is not None
    assert "TestResponder" in core.handlers.names()
    assert "AlertResponder" not in core.handlers.names()  # the shipped file is not read
    event = Event.create(type="alert.triggered", source="test", payload={"severity": "high"})
    core.store.publish(event)  # stored, not dispatched: this test runs the attempt itself
    queue(core.deliveries, event.id, "TestResponder")

    verdict = run_attempt(core, event.id, "TestResponder", "t1", "in-process")

    assert verdict.outcome is Outcome.SUCCEEDED
    outcome = core.get_event(event.id).deliveries["TestResponder"]["outcome"]
    assert (outcome["agent"], outcome["backend"]) == ("TestResponder", "dry_run")
