"""The webhook type map: the built-in file, an override merged over it, and its mistakes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from eda.core import Core
from eda.errors import InvalidInput
from eda.settings import Settings
from webhooks.app import create_app
from webhooks.mapping import load_type_map


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
        ("github:\n  types:\n    push: code.pushed\n    issues: 'issue.{colour}'\n",
         "4: github.types.issues", "unknown placeholder ['colour']"),
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
)  # fmt: skip
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
