"""The README tells the truth about configuration, the two commands and the delivery's lifecycle."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from eda import delivery
from eda.settings import ENVIRONMENT
from webhooks.sources import PROVIDERS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
TABLE = README[README.index("## Configuration") : README.index("## Development")]


def test_every_setting_variable_is_in_the_configuration_table() -> None:
    missing = [name for name in ENVIRONMENT if f"`{name}`" not in TABLE]
    assert missing == []


def test_every_provider_secret_is_in_the_configuration_table() -> None:
    variables = {p.secret_variable for p in PROVIDERS.values()}
    assert variables and all(name in TABLE for name in variables)


def test_the_ci_script_runs_the_readmes_test_commands() -> None:
    lines = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    commands = [line for line in lines if line.startswith("python3 ")]
    assert commands == ["python3 scripts/dev.py test", "python3 scripts/dev.py test-rabbitmq"]
    for command in commands:
        assert f"\n{command}\n" in README


def test_the_procfile_variables_are_documented() -> None:
    used = set(re.findall(r"\$\{(\w+)", (ROOT / "Procfile").read_text()))
    assert used and all(f"`{name}`" in TABLE for name in used)


def test_the_readmes_delivery_lifecycle_is_the_one_drawn_in_its_module() -> None:
    doc = delivery.__doc__ or ""
    drawn = doc[doc.index("::\n") + 3 : doc.index("\nEach step")]
    section = README[README.index("**The delivery's lifecycle**") :]
    start = section.index("```\n") + 4
    shown = section[start : section.index("\n```", start)]
    assert textwrap.dedent(shown).strip("\n") == textwrap.dedent(drawn).strip("\n")
