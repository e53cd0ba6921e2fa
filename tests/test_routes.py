"""Routes: the routes file, payload conditions, code registration and planning."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agents.definitions import load_agents
from eda import handlers
from eda.core import Core
from eda.errors import InvalidInput
from eda.event import Event
from eda.flow import FlowRules, RateLimit
from eda.retry import RetryOverride
from eda.routes import Route, RouteTable, load_routes, parse_conditions
from eda.settings import Settings
from tasks import connect
from tests.handlers import needs_two_arguments


def known(name: str) -> bool:
    return name in {"Known", "Other"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    return path


def test_a_routes_file_loads_patterns_handlers_conditions_and_permanent_errors(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        "routes:\n"
        "  - events: [alert.triggered, 'code.*']\n"
        "    handler: Known\n"
        "    when:\n"
        "      severity: {in: [critical, high]}\n"
        "      env: production\n"
        "    permanent: [KeyError]\n",
    )
    (route,) = load_routes(path, known)
    assert route.patterns == ("alert.triggered", "code.*")
    assert route.permanent == ("KeyError",)
    assert route.retry == RetryOverride(permanent=("KeyError",))
    assert [c.describe() for c in route.conditions] == [
        "severity in ['critical', 'high']",
        "env equals 'production'",
    ]
    assert route.origin == f"{path}:2"


def test_a_rate_limit_may_be_its_rate_alone_in_a_route_an_agent_and_flow_rules(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "routes:\n  - events: a.b\n    handler: Known\n    rate_limit: 20/s\n")
    (route,) = load_routes(path, known)
    agents = tmp_path / "agents.yaml"
    agents.write_text("agents:\n  - name: Paced\n    instructions: x\n    rate_limit: 2/m\n")
    agent = load_agents(agents, dict)["Paced"]
    assert route.flow is not None and route.flow.rate_limit == RateLimit(rate="20/s")
    assert agent.flow is not None and agent.flow.rate_limit == RateLimit(rate="2/m")
    assert FlowRules(rate_limit="1/h").rate_limit == RateLimit(rate="1/h")
    with pytest.raises(InvalidInput, match="rate_limit"):
        load_routes(write(tmp_path, "routes:\n  - events: a.b\n    rate_limit: fast\n"), known)


def test_a_route_carries_its_retry_policy_and_permanent_adds_to_it(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "routes:\n"
        "  - events: a.b\n"
        "    handler: Known\n"
        "    permanent: [KeyError]\n"
        "    retry: {max_retries: 1, backoff: 0.5, jitter: false, permanent: [ValueError]}\n"
        "  - events: c.d\n"
        "    handler: Other\n",
    )
    first, second = load_routes(path, known)
    assert first.retry == RetryOverride(
        max_retries=1, backoff=0.5, jitter=False, permanent=("ValueError", "KeyError")
    )
    assert first.permanent == ("ValueError", "KeyError")
    assert second.retry is None and second.permanent == ()


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        (
            "routes:\n  - events: a.b\n    handler: Nobody\n",
            "3: routes[0] (Nobody).handler",
            "unknown handler 'Nobody'",
        ),
        (
            "routes:\n  - events: a.b\n    handler: Known\n  - events: 'A.B'\n    handler: Known\n",
            "4: routes[1] (Known).events",
            "'A.B' is not an event-type pattern",
        ),
        (
            "routes:\n  - events: [a.b, 'B']\n    handler: Known\n",
            "2: routes[0] (Known).events[1]",
            "'B' is not an event-type pattern",
        ),
        (
            "routes:\n  - events: []\n    handler: Known\n",
            "2: routes[0] (Known).events",
            "a pattern or a list of patterns",
        ),
        ("routes:\n  - handler: Known\n", "2: routes[0] (Known).events", "is required"),
        (
            "routes:\n  - events: a.b\n    handler: Known\n    when: {x: {near: 1}}\n",
            "4: routes[0] (Known).when.x",
            "unknown condition 'near'",
        ),
        (
            "routes:\n  - events: a.b\n    handler: Known\n    when: {x: {gt: high}}\n",
            "4: routes[0] (Known).when.x.gt",
            "expects a number",
        ),
        (
            "routes:\n  - events: a.b\n    handler: Known\n    when: [x]\n",
            "4: routes[0] (Known).when",
            "must map payload fields to conditions",
        ),
        (
            "routes:\n  - events: a.b\n    handler: Known\n    colour: red\n",
            "4: routes[0] (Known).colour",
            "is not a known key",
        ),
        (
            "routes:\n  - events: a.b\n    handler: Known\n    permanent: KeyError\n",
            "4: routes[0] (Known).permanent",
            "must be a list",
        ),
        (
            "routes:\n  - events: a.b\n    handler: Known\n  - events: c.d\n    handler: Other\n"
            "    retry:\n      max_retries: -1\n",
            "7: routes[1] (Other).retry.max_retries",
            "must be >= 0",
        ),
        (
            "routes:\n  - events: a.b\n    handler: Known\n    retry: {max_retry: 1}\n",
            "4: routes[0] (Known).retry.max_retry",
            "is not a known key",
        ),
        (
            "routes:\n  - events: a.b\n    handler: Known\n    retry: {jitter: 'yes'}\n",
            "4: routes[0] (Known).retry.jitter",
            "must be true or false",
        ),
        (
            "routes:\n  - events: a.b\n    handler: Known\n    retry: {permanent: [1]}\n",
            "4: routes[0] (Known).retry.permanent[0]",
            "must be a string",
        ),
        ("routes: {}\n", "1: routes", "must be a list"),
        ("- a\n", "1", "must be a mapping"),
        (
            "routes:\n  - events: a.b\n    handler: Known\n    handler: Other\n",
            "4",
            "'handler' is given twice",
        ),
    ],
)
def test_a_bad_routes_file_names_the_file_the_line_the_route_and_the_field(
    tmp_path: Path, text: str, field: str, reason: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InvalidInput) as error:
        load_routes(path, known)
    assert error.value.field == f"{path}:{field}"
    assert reason in error.value.reason


def test_a_routes_file_that_is_not_yaml_or_missing_says_so(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="is not valid YAML"):
        load_routes(write(tmp_path, "routes: [\n"), known)
    with pytest.raises(InvalidInput, match="cannot be read"):
        load_routes(tmp_path / "absent.yaml", known)


@pytest.mark.parametrize(
    ("spec", "payload", "holds"),
    [
        ({"severity": {"in": ["critical", "high"]}}, {"severity": "high"}, True),
        ({"severity": {"in": ["critical", "high"]}}, {"severity": "low"}, False),
        ({"user.id": {"exists": True}}, {"user": {"id": 7}}, True),
        ({"user.id": {"exists": True}}, {"user": {}}, False),
        ({"user.id": {"exists": False}}, {}, True),
        ({"count": {"gt": 3}}, {"count": 4}, True),
        ({"count": {"lte": 3}}, {"count": 4}, False),
        ({"count": {"gt": 3}}, {"count": "many"}, False),
        ({"env": "prod"}, {"env": "prod"}, True),
        ({"env": {"not_equals": "prod"}}, {"env": "dev"}, True),
        ({"env": "prod"}, "not an object", False),
    ],
)
def test_conditions_test_payload_fields(spec: Any, payload: Any, holds: bool) -> None:
    (condition,) = parse_conditions(spec, "when")
    assert condition.holds(payload) is holds


def test_plan_gives_each_handler_once_and_records_why_a_condition_skipped_it(
    core: Core,
) -> None:
    core.routes = RouteTable(
        [
            Route(("alert.*",), "Pager", parse_conditions({"severity": "critical"}, "w")),
            Route(("*",), "Auditor"),
            Route(("alert.triggered",), "Auditor"),
        ]
    )
    event = Event.create(type="alert.triggered", source="t", payload={"severity": "low"})
    plan = {p.handler: p.skipped_by for p in core.plan(event)}
    assert plan == {"Pager": "condition severity equals 'critical'", "Auditor": None}


def test_subscriptions_add_to_the_routes_and_name_known_handlers_only(
    settings: Settings,
) -> None:
    dispatching = connect(settings)
    dispatching.subscribe(["billing.*"], "tests.handlers:succeed")
    event = Event.create(type="billing.refunded", source="t")
    assert [p.handler for p in dispatching.plan(event)] == ["tests.handlers:succeed"]
    with pytest.raises(InvalidInput, match="neither a registered handler"):
        dispatching.subscribe(["billing.*"], "tests.handlers:nothing_here")
    with pytest.raises(InvalidInput, match="not an event-type pattern"):
        dispatching.subscribe(["Billing"], "tests.handlers:succeed")
    assert dispatching.unsubscribe("billing.*", "tests.handlers:succeed")
    assert dispatching.plan(event) == []


def test_handlers_registered_in_code_are_routed_by_their_pattern(settings: Settings) -> None:
    def audit(event: Event) -> None:
        return None

    handlers.register_handler("ledger.*", audit, name="test-ledger-auditor")
    dispatching = connect(settings)
    event = Event.create(type="ledger.closed", source="t")
    assert "test-ledger-auditor" in [p.handler for p in dispatching.plan(event)]
    assert dispatching.handlers is not None
    assert dispatching.handlers.resolve("test-ledger-auditor") is audit
    with pytest.raises(InvalidInput, match="already registered"):
        handlers.register("test-ledger-auditor", lambda event: None)


@pytest.mark.parametrize(
    ("fn", "problem"),
    [
        (needs_two_arguments, "cannot be called with one event"),
        (lambda: None, "cannot be called with one event"),
        ("tests.handlers:succeed", "is not callable"),
    ],
)
def test_a_handler_registered_in_code_must_be_callable_with_one_event(
    fn: Any, problem: str
) -> None:
    registry = handlers.HandlerRegistry()
    with pytest.raises(InvalidInput, match=f"'test-misfit' {problem}"):
        registry.register("test-misfit", fn)
    with pytest.raises(InvalidInput, match=problem):
        registry.register_handler("ledger.*", fn)
    assert registry.names() == [] and registry.code_routes() == []


@pytest.mark.parametrize(
    "name",
    [
        "sys:exit",
        "os:system",
        "this:s",
        "tests.handlers:Event",  # a class, not a function
        "eda.tools:subprocess.run",  # an attribute path reaching the standard library
        "eda.core:logging.setLogRecordFactory",
        "yaml:unsafe_load",  # a function, but of no handler module
        "tests.handlers:json",  # a module's import, not its own function
        "tests.handlers:needs_two_arguments",
    ],
)
def test_only_functions_of_handler_modules_can_be_named(settings: Settings, name: str) -> None:
    registry = handlers.registry_for(settings.handler_modules)
    assert registry.known(name) is False
    with pytest.raises(InvalidInput, match="neither a registered handler"):
        connect(settings).subscribe(["billing.*"], name)


def test_the_routes_file_may_name_any_function_of_the_deployment(settings: Settings) -> None:
    registry = handlers.registry_for(())
    assert registry.known("tests.handlers:succeed") is False  # not for a subscription
    assert registry.known("tests.handlers:succeed", trusted=True) is True
    assert registry.known("eda.tools:subprocess.run", trusted=True) is False


def test_a_subscription_with_one_bad_pattern_subscribes_nothing(settings: Settings) -> None:
    dispatching = connect(settings)
    with pytest.raises(InvalidInput, match="not an event-type pattern"):
        dispatching.subscribe(["billing.paid", "Billing"], "tests.handlers:succeed")
    assert dispatching.subscriptions() == []
    with pytest.raises(InvalidInput, match="neither a registered handler"):
        dispatching.subscribe(["billing.paid"], "sys:exit")


def test_a_broken_routes_file_stops_connect_naming_the_line_the_route_and_the_field(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    path = write(tmp_path, "routes:\n  - events: a.b\n    handler: tests.handlers:nothing_here\n")
    with pytest.raises(InvalidInput) as error:
        connect(make_settings(routes_path=path))
    assert error.value.field == f"{path}:3: routes[0] (tests.handlers:nothing_here).handler"
