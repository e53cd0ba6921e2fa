"""eda.settings: every setting from its variable, secrets that never print, checks at start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from eda.errors import InvalidInput
from eda.settings import (
    ENVIRONMENT,
    MIN_TOKEN_LENGTH,
    PROVIDER_SECRETS,
    Settings,
    child_environment,
    load,
)
from webhooks.sources import PROVIDERS

ROOT = Path(__file__).resolve().parent.parent

#: One of every secret, each a value that could not appear by chance.
SECRETS = {
    "GITHUB_WEBHOOK_SECRET": "gh-secret-7f3a9c1e",
    "STRIPE_WEBHOOK_SECRET": "whsec_stripe-secret-2b8d4e6f",
    "SLACK_SIGNING_SECRET": "slack-secret-5c0e2a9b",
    "EDA_WEBHOOK_SECRET_ACME": "whsec_YWNtZSBzZWNyZXQgMWQ0ZjhlMmM=",
    "EDA_WEBHOOK_SECRET_EVENTS": "whsec_ZXZlbnRzIHNlY3JldCA5YTNiN2UxZg==",
    "EDA_ADMIN_TOKEN": "admin-token-3e9f1b7c5d2a",
    "EDA_MCP_TOKEN": "mcp-token-8c4a2e6f0b1d",
    "EDA_EVENTS_TOKEN_ACME": "events-token-6d1f9a3c7e",
    "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer otlp-token-4b7e1c9a",
}


def test_every_secret_is_read_into_the_settings() -> None:
    settings = load(SECRETS)
    assert {
        s: settings.webhook_secret(s) for s in ("github", "stripe", "slack", "acme", "events")
    } == {
        "github": SECRETS["GITHUB_WEBHOOK_SECRET"],
        "stripe": SECRETS["STRIPE_WEBHOOK_SECRET"],
        "slack": SECRETS["SLACK_SIGNING_SECRET"],
        "acme": SECRETS["EDA_WEBHOOK_SECRET_ACME"],
        "events": SECRETS["EDA_WEBHOOK_SECRET_EVENTS"],
    }
    assert settings.webhook_secret("opsgenie") is None
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == SECRETS["EDA_ADMIN_TOKEN"]
    assert settings.mcp_token is not None
    assert settings.mcp_token.get_secret_value() == SECRETS["EDA_MCP_TOKEN"]
    assert settings.events_token("acme") == SECRETS["EDA_EVENTS_TOKEN_ACME"]
    assert settings.events_token("other") is None
    assert settings.otel_headers is not None
    assert settings.otel_headers.get_secret_value() == SECRETS["OTEL_EXPORTER_OTLP_HEADERS"]


def test_a_secret_never_shows_in_repr_str_or_a_dump() -> None:
    settings = load(SECRETS)
    shown = [repr(settings), str(settings), str(settings.model_dump()), settings.model_dump_json()]
    for text in shown:
        for secret in SECRETS.values():
            assert secret not in text


def test_empty_secrets_count_as_unset() -> None:
    settings = load(dict.fromkeys(SECRETS, ""))
    assert (settings.webhook_secrets, settings.admin_token, settings.mcp_token) == ({}, None, None)
    assert settings.events_tokens == {}


@pytest.mark.parametrize("variable", ["EDA_ADMIN_TOKEN", "EDA_MCP_TOKEN", "EDA_EVENTS_TOKEN_ACME"])
def test_a_short_token_is_refused_naming_its_variable_and_never_its_value(variable: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        load({variable: "8-chars!"})
    assert refused.value.field == variable
    assert f"at least {MIN_TOKEN_LENGTH}" in str(refused.value)
    assert "8-chars!" not in str(refused.value)
    assert len(str(refused.value).splitlines()) == 1


@pytest.mark.parametrize("variable", ["EDA_ADMIN_TOKEN", "EDA_MCP_TOKEN"])
def test_a_token_of_sixteen_characters_is_taken(variable: str) -> None:
    assert MIN_TOKEN_LENGTH == 16
    field = ENVIRONMENT[variable]
    token = getattr(load({variable: "a" * 16}), field)
    assert token.get_secret_value() == "a" * 16


def test_a_provider_secret_under_the_standard_webhooks_name_is_refused() -> None:
    with pytest.raises(InvalidInput) as refused:
        load({"EDA_WEBHOOK_SECRET_GITHUB": "gh-secret-7f3a9c1e"})
    assert refused.value.field == "EDA_WEBHOOK_SECRET_GITHUB"
    assert "GITHUB_WEBHOOK_SECRET" in refused.value.reason
    assert "gh-secret" not in str(refused.value)


def test_a_secret_variable_that_names_no_source_is_refused() -> None:
    with pytest.raises(InvalidInput) as refused:
        load({"EDA_WEBHOOK_SECRET_2FA": "whsec_abc"})
    assert refused.value.field == "EDA_WEBHOOK_SECRET_2FA"
    assert "whsec_abc" not in str(refused.value)


def test_the_providers_secret_variables_are_the_ones_the_settings_read() -> None:
    assert {s.secret_variable: name for name, s in PROVIDERS.items()} == PROVIDER_SECRETS


def test_a_tool_script_inherits_no_secret_of_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("EDA_PREFIX", "kept")
    inherited = child_environment()
    assert not set(SECRETS) & set(inherited)
    assert inherited["EDA_PREFIX"] == "kept"


def test_model_prices_are_read_from_json_with_cache_prices_defaulting_to_the_api_ratios() -> None:
    prices = load({"EDA_MODEL_PRICES": '{"claude-x": {"input": 3, "output": 15}}'}).model_prices

    usage = {
        "input_tokens": 1_000_000,
        "output_tokens": 100_000,
        "cache_creation_input_tokens": 1_000_000,
        "cache_read_input_tokens": 1_000_000,
    }
    assert prices["claude-x"].cost(usage) == pytest.approx(3 + 1.5 + 3.75 + 0.3)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("{not json", "is not JSON"),
        ('["claude-x"]', "a JSON object of model name -> "),
        ('{"claude-x": {"input": 3}}', "claude-x.output: Field required"),
        ('{"claude-x": {"input": -1, "output": 1}}', "claude-x.input: Input should be greater"),
        ('{"claude-x": {"input": 1, "output": 1, "cached": 1}}', "claude-x.cached: Extra inputs"),
    ],
)
def test_a_malformed_price_table_is_refused_naming_the_variable_and_the_model(
    value: str, reason: str
) -> None:
    with pytest.raises(InvalidInput) as raised:
        load({"EDA_MODEL_PRICES": value})

    assert raised.value.field == "EDA_MODEL_PRICES"
    assert reason in raised.value.reason


def test_settings_are_frozen() -> None:
    settings: Settings = load({})
    with pytest.raises(ValueError, match="frozen"):
        settings.prefix = "other"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("token", "starts"), [("8-chars!", False), ("a-token-of-16-ch", True)])
def test_the_web_refuses_a_short_admin_token_at_start_in_one_line(token: str, starts: bool) -> None:
    code = "import webhooks.wsgi"
    env = {**os.environ, "EDA_ADMIN_TOKEN": token, "PYTHONPATH": str(ROOT)}
    if starts:
        started = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True
        )
        assert started.returncode == 0, started.stderr[-2000:]
        return
    command = [sys.executable, "-m", "gunicorn", "-b", "127.0.0.1:0", "--no-control-socket"]
    started = subprocess.run(
        [*command, "webhooks.wsgi:app"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert started.returncode != 0
    reasons = [line for line in started.stderr.splitlines() if "EDA_ADMIN_TOKEN" in line]
    assert reasons == [reasons[0]]
    assert reasons[0].startswith("EDA_ADMIN_TOKEN: is 8 characters")
    assert "Traceback" not in started.stderr
    assert token not in started.stderr
