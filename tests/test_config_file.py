"""The shared reader of configuration files: lines kept, strict models, one error format."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import field_validator

from eda.config_file import ConfigModel, RetryField, read_yaml, unique_names, validate
from eda.errors import InvalidInput
from eda.retry import RetryOverride


class Step(ConfigModel):
    refused = {"old": "is gone: use new"}

    name: str
    enabled: bool = True
    count: int = 0
    retry: RetryField = None


class Plan(ConfigModel):
    title: str
    steps: list[Step] = []

    @classmethod
    def check(cls, text: str, tmp_path: Path) -> Plan:
        path = tmp_path / "plan.yaml"
        path.write_text(text)
        return validate(read_yaml(path), Plan)


class UniquePlan(Plan):
    @field_validator("steps")
    @classmethod
    def _unique(cls, steps: list[Step]) -> list[Step]:
        return unique_names(steps)


def refusal(tmp_path: Path, text: str) -> str:
    with pytest.raises(InvalidInput) as error:
        Plan.check(text, tmp_path)
    return str(error.value).removeprefix(f"{tmp_path / 'plan.yaml'}:")


def test_a_valid_file_becomes_its_models(tmp_path: Path) -> None:
    plan = Plan.check(
        "title: t\nsteps:\n  - name: a\n    retry: {max_retries: 2, permanent: [KeyError]}\n",
        tmp_path,
    )
    assert plan.steps == [
        Step(name="a", retry=RetryOverride(max_retries=2, permanent=("KeyError",)))
    ]


def test_anchors_and_merge_keys_read_as_plain_yaml(tmp_path: Path) -> None:
    plan = Plan.check(
        "title: t\nsteps:\n  - &first {name: a, count: 3}\n  - {<<: *first, name: b}\n", tmp_path
    )
    assert [(step.name, step.count) for step in plan.steps] == [("a", 3), ("b", 3)]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (
            "title: t\nsteps:\n  - name: a\n  - name: b\n    count: many\n",
            "5: steps[1] (b).count: must be a whole number, not 'many'",
        ),
        (
            "title: t\nsteps:\n  - name: a\n    enabled: 'yes'\n",
            "4: steps[0] (a).enabled: must be true or false, not 'yes'",
        ),
        (
            "title: t\nsteps:\n  - name: a\n    colour: red\n",
            "4: steps[0] (a).colour: is not a known key "
            "(expected one of name, enabled, count, retry)",
        ),
        ("title: t\nsteps:\n  - name: a\n    old: 1\n", "4: steps[0] (a).old: is gone: use new"),
        ("title: t\nsteps:\n  - count: 1\n", "3: steps[0].name: is required"),
        ("steps: []\n", "1: title: is required"),
        (
            "title: t\nsteps:\n  - name: a\n    retry:\n      max_retries: -1\n",
            "5: steps[0] (a).retry.max_retries: must be >= 0",
        ),
        (
            "title: t\nsteps:\n  - name: a\n    retry:\n      backof: 1\n",
            "5: steps[0] (a).retry.backof: is not a known key "
            "(expected one of max_retries, backoff, backoff_max, jitter, permanent)",
        ),
        ("title: t\ntitle: u\n", "2: is not valid YAML: key 'title' is given twice"),
        ("title: t\n? [a]\n: b\n", "2: is not valid YAML: key ['a'] is not text (quote it)"),
        ("title: [\n", "2: is not valid YAML: expected the node content, but found '<stream end>'"),
        ("", "1: must be a mapping of keys to values, not None"),
    ],
)
def test_a_mistake_is_told_as_file_line_entry_field_and_why(
    tmp_path: Path, text: str, said: str
) -> None:
    assert refusal(tmp_path, text) == said


def test_a_name_used_twice_is_refused_at_the_second(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text("title: t\nsteps:\n  - name: a\n  - name: b\n  - name: a\n")
    with pytest.raises(InvalidInput) as error:
        validate(read_yaml(path), UniquePlan)
    assert str(error.value) == f"{path}:5: steps[2] (a).name: 'a' is used twice"


def test_a_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as error:
        read_yaml(tmp_path / "absent.yaml")
    assert error.value.field == str(tmp_path / "absent.yaml")
    assert error.value.reason.startswith("cannot be read")
