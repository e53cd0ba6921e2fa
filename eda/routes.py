"""Routes: which handlers receive an event, declared as data.

A routes file (``EDA_ROUTES``, default ``tasks/routes.yaml``)::

    routes:
      - events: [alert.triggered]        # patterns: exact, 'code.*', or '*'
        handler: AlertResponder          # an agent, a registered name, or 'pkg.module:function'
        when:                            # optional; every condition must hold
          severity: {in: [critical, high]}
          count: {gt: 3}
          user.id: {exists: true}        # dotted paths reach into the payload
          env: production                # a bare value means equals
        permanent: [KeyError]            # exception names this handler never retries

Patterns are shell-style: ``*`` matches any run of characters, dots included.
"""

from __future__ import annotations

import fnmatch
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from eda.errors import InvalidInput
from eda.retry import RetryOverride

#: A route pattern: dotted lower-case words, where any word may hold ``*``.
ROUTE_PATTERN = re.compile(r"^(\*|[a-z0-9_*]+(\.[a-z0-9_*]+)*)$")
#: Condition operators and what they test (``actual`` from the payload, then ``expected``).
OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "equals": operator.eq,
    "not_equals": operator.ne,
    "in": lambda actual, expected: actual in expected,
    "not_in": lambda actual, expected: actual not in expected,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}
_MISSING = object()


def check_pattern(pattern: str, where: str) -> str:
    if not isinstance(pattern, str) or not ROUTE_PATTERN.fullmatch(pattern):
        raise InvalidInput(
            where, f"{pattern!r} is not an event-type pattern ('alert.triggered', 'code.*', '*')"
        )
    return pattern


def type_matches(pattern: str, event_type: str) -> bool:
    return fnmatch.fnmatchcase(event_type, pattern)


def lookup(payload: Any, path: str) -> Any:
    """The value at a dotted path in the payload, or a sentinel when absent."""
    value = payload
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


@dataclass(frozen=True)
class Condition:
    """One test on a payload field."""

    path: str
    op: str
    expected: Any

    def holds(self, payload: Any) -> bool:
        actual = lookup(payload, self.path)
        if self.op == "exists":
            return (actual is not _MISSING) == bool(self.expected)
        if actual is _MISSING:
            return False
        try:
            return bool(OPERATORS[self.op](actual, self.expected))
        except TypeError:
            return False  # a string compared with a number: the condition does not hold

    def describe(self) -> str:
        return f"{self.path} {self.op} {self.expected!r}"


def parse_conditions(spec: Any, where: str) -> tuple[Condition, ...]:
    """Conditions from a ``when:`` mapping; InvalidInput names the field at fault."""
    if spec is None:
        return ()
    if not isinstance(spec, dict):
        raise InvalidInput(where, "'when' must map payload fields to conditions")
    conditions = []
    for path, test in spec.items():
        if not isinstance(path, str) or not path:
            raise InvalidInput(where, f"{path!r} is not a payload field path")
        if not isinstance(test, dict):
            conditions.append(Condition(path, "equals", test))
            continue
        for op, expected in test.items():
            if op != "exists" and op not in OPERATORS:
                known = ", ".join(["exists", *OPERATORS])
                raise InvalidInput(f"{where}.{path}", f"unknown condition {op!r} (use {known})")
            if op in ("in", "not_in") and not isinstance(expected, list):
                raise InvalidInput(f"{where}.{path}.{op}", "expects a list")
            if op in ("gt", "gte", "lt", "lte") and (
                isinstance(expected, bool) or not isinstance(expected, int | float)
            ):
                raise InvalidInput(f"{where}.{path}.{op}", "expects a number")
            conditions.append(Condition(path, op, expected))
    return tuple(conditions)


@dataclass(frozen=True)
class Route:
    """Event-type patterns to one handler, with conditions on the payload."""

    patterns: tuple[str, ...]
    handler: str
    conditions: tuple[Condition, ...] = ()
    permanent: tuple[str, ...] = ()
    origin: str = "code"
    #: The route's own retry policy (its ``retry:``), narrowing the defaults.
    retry: RetryOverride | None = None

    def matches(self, event_type: str) -> bool:
        return any(type_matches(p, event_type) for p in self.patterns)

    def failed_condition(self, payload: Any) -> Condition | None:
        return next((c for c in self.conditions if not c.holds(payload)), None)


@dataclass
class RouteTable:
    """Routes from the file and from code, in the order they were declared."""

    routes: list[Route] = field(default_factory=list)

    def add(self, route: Route) -> None:
        self.routes.append(route)

    def matching(self, event_type: str) -> list[Route]:
        return [route for route in self.routes if route.matches(event_type)]

    def handlers(self) -> set[str]:
        return {route.handler for route in self.routes}


class _LineLoader(yaml.SafeLoader):
    """A YAML loader that remembers the line each mapping starts on."""


def _mapping_with_line(loader: _LineLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping = loader.construct_mapping(node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_with_line)


def load_routes(path: Path, known_handler: Callable[[str], bool]) -> list[Route]:
    """Read and check a routes file; InvalidInput says file, line and reason."""
    try:
        document = yaml.load(path.read_text(), Loader=_LineLoader)  # noqa: S506 (safe subclass)
    except OSError as exc:
        raise InvalidInput(str(path), f"cannot read the routes file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InvalidInput(str(path), f"is not valid YAML: {exc}") from None
    entries = document.get("routes") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise InvalidInput(str(path), "must be a mapping with a 'routes' list")
    return [_route(entry, path, known_handler) for entry in entries]


def _route(entry: Any, path: Path, known_handler: Callable[[str], bool]) -> Route:
    if not isinstance(entry, dict):
        raise InvalidInput(str(path), "every route must be a mapping")
    where = f"{path}:{entry.pop('__line__')}"
    unknown = set(entry) - {"events", "handler", "when", "permanent", "retry"}
    if unknown:
        raise InvalidInput(where, f"unknown route keys: {', '.join(sorted(unknown))}")
    events = entry.get("events")
    patterns = [events] if isinstance(events, str) else events
    if not isinstance(patterns, list) or not patterns:
        raise InvalidInput(where, "'events' must be a pattern or a list of patterns")
    handler = entry.get("handler")
    if not isinstance(handler, str) or not known_handler(handler):
        raise InvalidInput(where, f"unknown handler {handler!r}")
    permanent = entry.get("permanent") or []
    if not isinstance(permanent, list) or not all(isinstance(p, str) for p in permanent):
        raise InvalidInput(where, "'permanent' must be a list of exception names")
    when = entry.get("when")
    if isinstance(when, dict):
        when.pop("__line__", None)
        for test in when.values():
            if isinstance(test, dict):
                test.pop("__line__", None)
    retry = entry.get("retry")
    if isinstance(retry, dict):
        retry.pop("__line__", None)
    try:
        override = RetryOverride.model_validate(retry) if retry is not None else None
    except ValueError as exc:
        raise InvalidInput(f"{where}: retry", str(exc).splitlines()[-1].strip()) from None
    return Route(
        retry=override,
        patterns=tuple(check_pattern(p, where) for p in patterns),
        handler=handler,
        conditions=parse_conditions(when, where),
        permanent=tuple(permanent),
        origin=where,
    )


def subscription_routes(subscriptions: Iterable[dict[str, Any]]) -> list[Route]:
    """Routes for the subscriptions made at run time (stored in Redis)."""
    return [Route((s["pattern"],), s["handler"], origin="subscription") for s in subscriptions]
