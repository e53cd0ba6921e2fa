"""The webhook type map: the built-in file, an override merged over it, and its mistakes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import yaml

from eda.core import Core
from eda.errors import InvalidInput
from eda.event import Event
from eda.settings import Settings
from webhooks.app import create_app
from webhooks.mapping import (
    MAX_KEPT_KEYS,
    MAX_RESOLVED,
    load_type_map,
    mapped_types,
    unrouted_types,
)

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "types.yaml"
    path.write_text(text)
    return path


def test_an_override_adds_sources_and_merges_its_types_over_the_built_in_ones(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        "pagerduty:\n  types:\n    incident.triggered: alert.triggered\n"
        "github:\n  types:\n    push: code.pushed_somewhere\n",
    )
    types = load_type_map(path)
    assert types.resolve("github", ["push"], {}) == "code.pushed_somewhere"
    assert types.resolve("github", ["pull_request"], {"action": "opened"}) == "code.pr_opened"
    assert types.resolve("pagerduty", ["incident.triggered"], {}) == "alert.triggered"
    assert types.resolve("pagerduty", ["x"], {"type": "x"}) == "pagerduty.x"


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        (
            "github:\n  types:\n    push: code.pushed\n    issues: 'issue.{colour}'\n",
            "4: github.types.issues",
            "unknown placeholder ['colour']",
        ),
        ("github:\n  types:\n    push: ''\n", "3: github.types.push", "must be a type template"),
        ("github:\n  types:\n    push: 'code.{'\n", "3: github.types.push", "is not a template"),
        ("github:\n  types: [push]\n", "2: github.types", "must map keys to type templates"),
        ("stripe:\n  default: 'stripe.{event'\n", "2: stripe.default", "is not a template"),
        ("stripe:\n  default: 5\n", "2: stripe.default", "must be a string"),
        ("stripe:\n  typse: {}\n", "2: stripe.typse", "is not a known key"),
        ("stripe: push\n", "1: stripe", "must be a mapping"),
        ("- github\n", "1", "must be a mapping"),
        ("github: {}\ngithub: {}\n", "2", "'github' is given twice"),
        ("github: [\n", "2", "is not valid YAML"),
    ],
)
def test_a_bad_type_map_names_the_file_the_line_the_source_and_the_key(
    tmp_path: Path, text: str, field: str, reason: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InvalidInput) as error:
        load_type_map(path)
    assert error.value.field == f"{path}:{field}"
    assert reason in error.value.reason


def test_a_missing_type_map_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as error:
        load_type_map(tmp_path / "absent.yaml")
    assert error.value.field == str(tmp_path / "absent.yaml")
    assert "cannot be read" in error.value.reason


def test_a_broken_type_map_stops_the_app_at_start(
    tmp_path: Path, make_settings: Callable[..., Settings], client: redis.Redis
) -> None:
    path = write(tmp_path, "stripe:\n  types:\n    invoice.paid: 'payment.{amount}'\n")
    settings = make_settings(webhook_types_path=path)
    with pytest.raises(InvalidInput) as error:
        create_app(Core(settings, client))
    assert error.value.field == f"{path}:3: stripe.types.invoice.paid"


def test_mapped_types_are_named_with_placeholders_as_wildcards() -> None:
    found = mapped_types(load_type_map())
    assert {"customer.churned", "payment.failed", "code.pr_*", "issue.comment_*"} <= set(found)
    assert not any("{" in name or "placeholder" in name for name in found)
    assert "github.*.*" not in found  # a source's default is a catch-all, not a mapped type


def test_a_stripe_cancellation_reaches_the_customer_agent_whose_instructions_speak_of_it(
    settings: Settings, client: redis.Redis
) -> None:
    from tasks import handlers

    registry, routes = handlers(settings)
    core = Core(settings, client, routes=routes, handlers=registry)
    churned = load_type_map().resolve("stripe", ["customer.subscription.deleted"], {})
    planned = core.plan(Event.create(type=churned, source="stripe", payload={}))
    assert [p.handler for p in planned] == ["CustomerAgent"]
    shipped = yaml.safe_load((ROOT / "agents" / "agents.yaml").read_text())
    agent = next(a for a in shipped["agents"] if a["name"] == "CustomerAgent")
    for routed in ("customer.signup", "customer.churn_risk", "customer.churned", "payment.failed"):
        assert f'"{routed}"' in agent["instructions"], routed


def test_stats_list_mapped_types_no_route_or_subscription_reaches(
    settings: Settings, client: redis.Redis
) -> None:
    from tasks import handlers

    registry, routes = handlers(settings)
    core = Core(settings, client, routes=routes, handlers=registry)
    unrouted = unrouted_types(core, load_type_map())
    assert {"payment.succeeded", "issue.*", "chat.mentioned"} <= set(unrouted)
    # Routed by the shipped routes: exactly, or some of a template's types.
    assert not {"customer.churned", "payment.failed", "code.pushed", "code.pr_*"} & set(unrouted)
    core.subscribe(["issue.*"], "tests.handlers:flaky")
    assert "issue.*" not in unrouted_types(core, load_type_map())


def test_resolved_types_are_kept_up_to_a_bound_and_neither_a_refused_nor_a_long_name_is(
    tmp_path: Path,
) -> None:
    types = load_type_map(write(tmp_path, "acme:\n  default: acme.received\n"))
    assert types.resolve("other", ["order.paid"], {"type": "order.paid"}) == "other.order.paid"
    assert types.resolve("other", ["order.paid"], {"type": "order.paid"}) == "other.order.paid"
    with pytest.raises(InvalidInput, match="cannot map other delivery"):
        types.resolve("other", ["."], {"type": "."})
    with pytest.raises(InvalidInput, match="cannot map other delivery"):
        types.resolve("other", ["."], {"type": "."})
    long = "x" * (MAX_KEPT_KEYS + 1)
    assert types.resolve("acme", [long], {"type": long}) == "acme.received"
    assert len(types._resolved) == 1
    for index in range(MAX_RESOLVED + 10):
        named = f"kind{index}.made"
        assert types.resolve("other", [named], {"type": named}) == f"other.kind{index}.made"
    assert len(types._resolved) == MAX_RESOLVED
