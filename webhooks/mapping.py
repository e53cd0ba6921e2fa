"""Provider event names to our event types, as data (``types.yaml``, overridable).

Each source has ``types`` (a key to a type template) and a ``default``
template; section ``"*"`` serves every source without a section of its own.
A file named by the setting ``webhook_types_path`` (``EDA_WEBHOOK_TYPES``)
has the same shape and is merged over the built-in file.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from eda.errors import InvalidInput
from eda.event import MAX_TYPE_LENGTH, TYPE_PATTERN

#: The built-in mapping, beside this module.
BUILT_IN = Path(__file__).with_name("types.yaml")
#: The section that serves every source without one of its own.
FALLBACK = "*"
#: Placeholders a template may use.
PLACEHOLDERS = frozenset({"source", "event", "action", "type", "subtype"})
_NOT_TYPE_CHARACTERS = re.compile(r"[^a-z0-9_.]")


class _Blank(dict[str, str]):
    """Template fields where an absent placeholder is an empty word."""

    def __missing__(self, key: str) -> str:
        return ""


@dataclass(frozen=True)
class TypeRule:
    """One source's mapping: keys to templates, and the template when none matches."""

    types: Mapping[str, str]
    default: str


def normalize(text: str) -> str:
    """Lower-case, anything outside ``[a-z0-9_.]`` as ``_``, empty words dropped."""
    cleaned = _NOT_TYPE_CHARACTERS.sub("_", text.lower())
    return ".".join(word for word in cleaned.split(".") if word)


@dataclass(frozen=True)
class TypeMap:
    """Every source's rule; :meth:`resolve` turns a delivery's keys into an event type."""

    rules: Mapping[str, TypeRule]

    def rule(self, source: str) -> TypeRule:
        return self.rules.get(source) or self.rules[FALLBACK]

    def resolve(self, source: str, keys: Sequence[str], fields: Mapping[str, str]) -> str:
        """The event type for the first key that has a template, else the default.

        Raises InvalidInput("type", reason) when the result is not a valid event type.
        """
        rule = self.rule(source)
        template = next((rule.types[k] for k in keys if k in rule.types), rule.default)
        event_type = normalize(template.format_map(_Blank(source=source, **fields)))
        if len(event_type) > MAX_TYPE_LENGTH or not TYPE_PATTERN.match(event_type):
            shown = ", ".join(repr(k[:64]) for k in keys) or "nothing"
            raise InvalidInput(
                "type", f"cannot map {source} delivery ({shown}) to an event type: {event_type!r}"
            )
        return event_type


def load_type_map(override: Path | None = None) -> TypeMap:
    """The built-in mapping, with ``override`` merged over it when given."""
    rules = _read(BUILT_IN)
    if override is not None:
        for source, rule in _read(override).items():
            base = rules.get(source, TypeRule({}, rules[FALLBACK].default))
            rules[source] = TypeRule({**base.types, **rule.types}, rule.default or base.default)
    return TypeMap(rules)


def _read(path: Path) -> dict[str, TypeRule]:
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InvalidInput(str(path), f"cannot read the type mapping: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InvalidInput(str(path), f"is not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidInput(str(path), "must map source names to {types, default}")
    return {
        str(source): _rule(section, f"{path}: {source}") for source, section in document.items()
    }


def _rule(section: Any, where: str) -> TypeRule:
    if not isinstance(section, dict) or set(section) - {"types", "default"}:
        raise InvalidInput(where, "must be a mapping with 'types' and/or 'default'")
    types = section.get("types") or {}
    if not isinstance(types, dict):
        raise InvalidInput(f"{where}.types", "must map keys to type templates")
    for key, template in types.items():
        _check_template(template, f"{where}.types.{key}")
    default = section.get("default") or ""
    if default:
        _check_template(default, f"{where}.default")
    return TypeRule({str(k): v for k, v in types.items()}, default)


def _check_template(template: Any, where: str) -> None:
    if not isinstance(template, str) or not template:
        raise InvalidInput(where, "must be a type template such as 'code.pr_{action}'")
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise InvalidInput(where, f"is not a template: {exc}") from None
    unknown = names - PLACEHOLDERS
    if unknown:
        allowed = ", ".join(sorted(PLACEHOLDERS))
        raise InvalidInput(where, f"unknown placeholder {sorted(unknown)} (use {allowed})")
