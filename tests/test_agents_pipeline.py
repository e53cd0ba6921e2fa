"""Pipeline stages before an agent: filters skip with their name, enrichers add data."""

from __future__ import annotations

import json
from typing import Any

import pytest

from eda.core import Core
from eda.handlers import Skip
from tests.agent_fixtures import dry_run, make_agent, stored_event
from tests.messages_api import MessagesAPI, message, messages_api, text

__all__ = ["dry_run", "make_agent", "messages_api"]  # fixtures used by the tests below

HIGH_SEVERITY = {"name": "high_severity", "filter": {"severity": {"in": ["critical", "high"]}}}


def enriched(request_text: str) -> Any:
    return json.loads(request_text.split("<enriched>\n", 1)[1].split("\n</enriched>", 1)[0])


def test_a_filter_that_does_not_hold_skips_the_delivery_with_its_name(
    messages_api: MessagesAPI, make_agent: Any, core: Core
) -> None:
    handler = make_agent(pipeline=[HIGH_SEVERITY])
    script = messages_api.script(message(text("handled")))

    with pytest.raises(Skip) as skipped:
        handler(stored_event(core, "alert.triggered", {"severity": "low"}))

    assert skipped.value.stage == "high_severity"
    assert "severity in ['critical', 'high']" in skipped.value.reason
    assert script.requests == []  # no model was asked
    assert handler(stored_event(core, "alert.triggered", {"severity": "high"}))["turns"] == 1


def test_a_callable_filter_by_import_path_skips_what_it_rejects(
    make_agent: Any, core: Core, dry_run: None
) -> None:
    handler = make_agent(
        pipeline=[{"name": "production", "filter": "tests.agent_stages:production_only"}]
    )

    with pytest.raises(Skip) as skipped:
        handler(stored_event(core, "alert.triggered", {"env": "staging"}))

    assert skipped.value.stage == "production"
    assert handler(stored_event(core, "alert.triggered", {"env": "production"}))["outcome"]


def test_enrichers_add_an_enriched_section_the_model_receives_as_data(
    messages_api: MessagesAPI, make_agent: Any, core: Core
) -> None:
    handler = make_agent(
        pipeline=[
            HIGH_SEVERITY,
            {"name": "owner", "enrich": "tests.agent_stages:owner"},
            {"name": "recent_alerts", "enrich": "agents.enrichers:recent_events"},
        ]
    )
    script = messages_api.script(message(text("handled")))
    earlier = stored_event(core, "alert.triggered", {"severity": "high", "service": "checkout"})
    stored_event(core, "deploy.finished", {"service": "checkout"})  # another type: not included
    event = stored_event(core, "alert.triggered", {"severity": "critical", "service": "checkout"})

    handler(event)

    (block,) = script.requests[0].body["messages"][0]["content"]
    data = enriched(block["text"])
    assert data["owner"] == {"team": "team-payments"}
    assert [item["id"] for item in data["recent_alerts"]] == [earlier.id]
    assert data["recent_alerts"][0]["payload"]["service"] == "checkout"


def test_an_enricher_that_returns_nothing_skips_the_delivery_with_its_name(
    make_agent: Any, core: Core
) -> None:
    handler = make_agent(pipeline=[{"name": "owner", "enrich": "tests.agent_stages:owner"}])

    with pytest.raises(Skip) as skipped:
        handler(stored_event(core, "alert.triggered", {"service": "unowned"}))

    assert skipped.value.stage == "owner" and "returned nothing" in skipped.value.reason
