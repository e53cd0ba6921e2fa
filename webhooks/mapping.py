"""Provider event names to our event types, as data (``types.yaml``, overridable).

Each source has ``types`` (a key to a type template) and a ``default``
template; section ``"*"`` serves every source without a section of its own.
A file named by the setting ``webhook_types_path`` (``EDA_WEBHOOK_TYPES``)
has the same shape and is merged over the built-in file. Both are read by
:mod:`eda.config_file`: a mistake names the file, the line, the source and the
key (``types.yaml:14: github.types.push: unknown placeholder ['x']``).
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import PlainValidator, field_validator

from eda.config_file import ConfigModel, problem, read_yaml, validate
from eda.core import Core
from eda.errors import InvalidInput
from eda.event import MAX_TYPE_LENGTH, TYPE_PATTERN
from eda.routes import subscription_routes, unrouted

#: The built-in mapping, beside this module.
BUILT_IN = Path(__file__).with_name("types.yaml")
#: The section that serves every source without one of its own.
FALLBACK = "*"
#: Placeholders a template may use.
PLACEHOLDERS = frozenset({"source", "event", "action", "type", "subtype"})
#: Most resolved event types a type map keeps.
MAX_RESOLVED = 4096
#: Longest keys (added up) whose event type is kept: a sender's long names are not.
MAX_KEPT_KEYS = 512
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
    #: Event types already resolved, by (source, keys, fields): the same few come again and
    #: again. Bounded; a delivery that cannot be mapped is never kept.
    _resolved: dict[tuple[Any, ...], str] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def rule(self, source: str) -> TypeRule:
        return self.rules.get(source) or self.rules[FALLBACK]

    def resolve(self, source: str, keys: Sequence[str], fields: Mapping[str, str]) -> str:
        """The event type for the first key that has a template, else the default.

        Raises InvalidInput("type", reason) when the result is not a valid event type.
        """
        seen = (source, *keys, *fields.items())
        found = self._resolved.get(seen)
        if found is None:
            found = self._resolve(source, keys, fields)
            if len(self._resolved) < MAX_RESOLVED and sum(map(len, keys)) <= MAX_KEPT_KEYS:
                self._resolved[seen] = found
        return found

    def _resolve(self, source: str, keys: Sequence[str], fields: Mapping[str, str]) -> str:
        rule = self.rule(source)
        template = next((rule.types[k] for k in keys if k in rule.types), rule.default)
        event_type = normalize(template.format_map(_Blank(source=source, **fields)))
        if len(event_type) > MAX_TYPE_LENGTH or not TYPE_PATTERN.match(event_type):
            shown = ", ".join(repr(k[:64]) for k in keys) or "nothing"
            raise InvalidInput(
                "type", f"cannot map {source} delivery ({shown}) to an event type: {event_type!r}"
            )
        return event_type


#: What a placeholder becomes while a template is turned into a pattern (survives normalize).
_WILDCARD_WORD = "placeholder"


def mapped_types(types: TypeMap) -> list[str]:
    """Every event type the map names (a placeholder as ``*``), defaults aside, sorted."""
    wild = {name: _WILDCARD_WORD for name in PLACEHOLDERS}
    found = {
        normalize(template.format_map(wild)).replace(_WILDCARD_WORD, "*")
        for rule in types.rules.values()
        for template in rule.types.values()
    }
    return sorted(found)


def unrouted_types(core: Core, types: TypeMap) -> list[str]:
    """The mapped types no route or subscription sends to a handler (``eda stats``)."""
    routes = [*core.routes.routes, *subscription_routes(core.subscriptions())]
    return unrouted(mapped_types(types), routes)


def load_type_map(override: Path | None = None) -> TypeMap:
    """The built-in mapping, with ``override`` merged over it when given."""
    rules = _read(BUILT_IN)
    if override is not None:
        for source, rule in _read(override).items():
            base = rules.get(source, TypeRule({}, rules[FALLBACK].default))
            rules[source] = TypeRule({**base.types, **rule.types}, rule.default or base.default)
    return TypeMap(rules)


def _template(value: Any) -> str:
    """A type template; ValueError says what is wrong with it."""
    if not isinstance(value, str) or not value:
        raise ValueError("must be a type template such as 'code.pr_{action}'")
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError as exc:
        raise ValueError(f"is not a template: {exc}") from None
    unknown = names - PLACEHOLDERS
    if unknown:
        allowed = ", ".join(sorted(PLACEHOLDERS))
        raise ValueError(f"unknown placeholder {sorted(unknown)} (use {allowed})")
    return value


def _types(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise problem("must map keys to type templates")
    for key, template in value.items():
        try:
            _template(template)
        except ValueError as exc:
            raise problem(str(exc), key) from None
    return {str(key): template for key, template in value.items()}


class TypeSection(ConfigModel):
    """One source's section of the file: its ``types`` and its ``default`` template."""

    types: Annotated[dict[str, str], PlainValidator(_types)] = {}
    default: str | None = None

    @field_validator("default")
    @classmethod
    def _default(cls, value: str | None) -> str | None:
        return _template(value) if value else value


def _read(path: Path) -> dict[str, TypeRule]:
    sections = validate(read_yaml(path), dict[str, TypeSection])
    return {
        source: TypeRule(section.types, section.default or "")
        for source, section in sections.items()
    }
