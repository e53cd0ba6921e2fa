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
        retry:                           # optional; this route's retry policy (eda/retry.py)
          max_retries: 1                 # tries after the first (default EDA_MAX_RETRIES)
          backoff: 0.5                   # seconds, the exponential's base (EDA_RETRY_BACKOFF)
          backoff_max: 60                # seconds, its cap (EDA_RETRY_BACKOFF_MAX)
          jitter: true                   # full jitter under the exponential
          permanent: [KeyError]          # exception names never retried
        permanent: [KeyError]            # shorthand for retry.permanent
      - events: [code.review_posted]
        destination: {name: ops, url: "https://hooks.example.com/eda"}  # instead of handler:
                                         # POST the events out (eda/destinations.py)

A key left out of ``retry:`` keeps the agent's value (``retry:`` in agents.yaml),
else the settings' default. A mistake is an InvalidInput naming the file, the line,
the route and the field (``tasks/routes.yaml:12: routes[3] (CustomerAgent).retry``).

Patterns are shell-style: ``*`` matches any run of characters, dots included.
"""

from __future__ import annotations

import fnmatch
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import PlainValidator, ValidationInfo, field_validator, model_validator

from eda.config_file import ConfigModel, RetryField, given, problem, read_yaml, validate
from eda.destinations import DestinationSpec
from eda.errors import InvalidInput
from eda.flow import Concurrency, Debounce, FlowRules, RateLimit
from eda.retry import RetryOverride
from eda.settings import Settings

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
#: What a pattern looks like, for error messages.
PATTERN_EXAMPLES = "('alert.triggered', 'code.*', '*')"
_MISSING = object()


def check_pattern(pattern: str, where: str) -> str:
    if not isinstance(pattern, str) or not ROUTE_PATTERN.fullmatch(pattern):
        raise InvalidInput(where, f"{pattern!r} is not an event-type pattern {PATTERN_EXAMPLES}")
    return pattern


def type_matches(pattern: str, event_type: str) -> bool:
    return fnmatch.fnmatchcase(event_type, pattern)


def may_overlap(pattern: str, types: str) -> bool:
    """True when a route ``pattern`` matches some type of ``types`` (a type, or ``*`` in words).

    ``code.*`` and ``code.pr_opened`` both reach some of ``code.pr_*``; ``alert.*`` none.
    """
    return type_matches(pattern, types.replace("*", "x")) or type_matches(types, pattern)


def unrouted(types: Iterable[str], routes: Iterable[Route]) -> list[str]:
    """Those of ``types`` (types or ``*`` patterns) that no route's pattern can reach."""
    patterns = [pattern for route in routes for pattern in route.patterns]
    return [t for t in types if not any(may_overlap(pattern, t) for pattern in patterns)]


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


class ConditionError(ValueError):
    """A mistake in conditions; ``at`` is the place below the conditions (field, operator)."""

    def __init__(self, at: tuple[str, ...], reason: str) -> None:
        super().__init__(reason)
        self.at = at
        self.reason = reason


def conditions(spec: Any) -> tuple[Condition, ...]:
    """Conditions from a ``when:`` mapping; ConditionError says which field and why."""
    if spec is None:
        return ()
    if not isinstance(spec, dict):
        raise ConditionError((), "must map payload fields to conditions")
    found = []
    for path, test in spec.items():
        if not isinstance(path, str) or not path:
            raise ConditionError((), f"{path!r} is not a payload field path")
        if not isinstance(test, dict):
            found.append(Condition(path, "equals", test))
            continue
        for op, expected in test.items():
            found.append(_condition(path, op, expected))
    return tuple(found)


def _condition(path: str, op: Any, expected: Any) -> Condition:
    if op != "exists" and op not in OPERATORS:
        known = ", ".join(["exists", *OPERATORS])
        raise ConditionError((path,), f"unknown condition {op!r} (use {known})")
    if op in ("in", "not_in") and not isinstance(expected, list):
        raise ConditionError((path, op), "expects a list")
    if op in ("gt", "gte", "lt", "lte") and (
        isinstance(expected, bool) or not isinstance(expected, int | float)
    ):
        raise ConditionError((path, op), "expects a number")
    return Condition(path, op, expected)


def parse_conditions(spec: Any, where: str) -> tuple[Condition, ...]:
    """Conditions from a ``when:`` mapping; InvalidInput names the field at fault."""
    try:
        return conditions(spec)
    except ConditionError as exc:
        raise InvalidInput(".".join((where, *exc.at)), exc.reason) from None


def checked_conditions(spec: Any) -> tuple[Condition, ...]:
    """Conditions for a configuration model: a mistake as a located validation error."""
    try:
        return conditions(spec)
    except ConditionError as exc:
        raise problem(exc.reason, *exc.at) from None


@dataclass(frozen=True)
class Route:
    """Event-type patterns to one handler, with conditions on the payload and its retry policy."""

    patterns: tuple[str, ...]
    handler: str
    conditions: tuple[Condition, ...] = ()
    retry: RetryOverride | None = None
    origin: str = "code"
    #: Flow control for this route's deliveries (concurrency, rate, debounce, priority).
    flow: FlowRules | None = None
    #: The destination this route POSTs to, when its handler is one (eda/destinations.py).
    destination: DestinationSpec | None = None

    @property
    def permanent(self) -> tuple[str, ...]:
        """Exception names this route never retries (its ``retry.permanent``)."""
        return self.retry.permanent if self.retry is not None else ()

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


def checked_patterns(value: Any) -> tuple[str, ...]:
    patterns = [value] if isinstance(value, str) else value
    if not isinstance(patterns, list) or not patterns:
        raise problem("must be a pattern or a list of patterns")
    for index, pattern in enumerate(patterns):
        if not isinstance(pattern, str) or not ROUTE_PATTERN.fullmatch(pattern):
            at = () if isinstance(value, str) else (index,)
            raise problem(f"{pattern!r} is not an event-type pattern {PATTERN_EXAMPLES}", *at)
    return tuple(patterns)


class RouteEntry(ConfigModel):
    """One entry of the routes file."""

    events: Annotated[tuple[str, ...], PlainValidator(checked_patterns)]
    handler: str | None = None
    destination: DestinationSpec | None = None
    when: Annotated[tuple[Condition, ...], PlainValidator(checked_conditions)] = ()
    permanent: list[str] = []
    retry: RetryField = None
    concurrency: Concurrency | None = None
    rate_limit: RateLimit | None = None
    debounce: Debounce | None = None
    priority: Literal["high", "normal", "low"] | None = None

    @field_validator("handler")
    @classmethod
    def _known(cls, handler: str | None, info: ValidationInfo) -> str | None:
        if handler is not None and not given(info, "known_handler")(handler):
            raise problem(
                f"unknown handler {handler!r}: not an agent, a name registered in code "
                "or an importable 'package.module:function'"
            )
        return handler

    @model_validator(mode="after")
    def _one_target(self) -> RouteEntry:
        if (self.handler is None) == (self.destination is None):
            raise problem("give exactly one of handler and destination")
        return self

    def route(self, origin: str) -> Route:
        retry = self.retry
        if self.permanent:  # ``permanent:`` is the shorthand of ``retry.permanent``
            base = retry or RetryOverride()
            names = tuple(dict.fromkeys([*base.permanent, *self.permanent]))
            retry = base.model_copy(update={"permanent": names})
        flow = FlowRules(
            concurrency=self.concurrency,
            rate_limit=self.rate_limit,
            debounce=self.debounce,
            priority=self.priority,
        )
        handler = self.destination.handler if self.destination else str(self.handler)
        return Route(
            self.events,
            handler,
            self.when,
            retry,
            origin,
            None if flow.empty else flow,
            self.destination,
        )


class RoutesFile(ConfigModel):
    """A whole routes file."""

    routes: list[RouteEntry]


def load_routes(
    path: Path, known_handler: Callable[[str], bool], settings: Settings | None = None
) -> list[Route]:
    """Read and check a routes file; InvalidInput says file, line, route and field.

    ``settings`` give destinations their secrets and the networks they may reach
    (by default none but public ones).
    """
    document = read_yaml(path)
    context = {"known_handler": known_handler, "settings": settings or Settings()}
    routes_file = validate(document, RoutesFile, context=context, label_keys=("handler",))
    return [
        entry.route(f"{path}:{document.line(('routes', index))}")
        for index, entry in enumerate(routes_file.routes)
    ]


def subscription_routes(subscriptions: Iterable[dict[str, Any]]) -> list[Route]:
    """Routes for the subscriptions made at run time (stored in Redis)."""
    return [Route((s["pattern"],), s["handler"], origin="subscription") for s in subscriptions]
