"""Lanes: which Celery queue each event type travels in.

A lane is a queue bound to the ``events`` topic exchange by patterns. The
table is declared in ``celeryconfig.py``; this module checks it and resolves a
type to its lane in our own code, because kombu's Redis transport only
emulates topic matching and a message that matches no binding is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from eda.errors import InvalidInput

#: A lane pattern is an exact event type or a dotted prefix followed by ``.*``.
LANE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*(\.\*)?$")
#: Lane names become queue names.
LANE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class Lane:
    """One queue and the event-type patterns routed to it."""

    name: str
    patterns: tuple[str, ...]

    def matches(self, event_type: str) -> bool:
        return any(pattern_matches(pattern, event_type) for pattern in self.patterns)

    def bindings(self) -> list[str]:
        """The patterns in AMQP topic syntax (``alert.*`` is ``alert.#``)."""
        return [p[:-1] + "#" if p.endswith(".*") else p for p in self.patterns]


def pattern_matches(pattern: str, event_type: str) -> bool:
    """``alert.*`` matches ``alert.triggered`` and ``alert.cpu.high``; others match exactly."""
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return event_type == pattern


def overlap(first: str, second: str) -> bool:
    """True when some event type matches both lane patterns."""
    return pattern_matches(first, _witness(second)) or pattern_matches(second, _witness(first))


def _witness(pattern: str) -> str:
    return pattern[:-1] + "x" if pattern.endswith(".*") else pattern


class LaneTable:
    """The lanes and the default lane; every event type resolves to exactly one."""

    def __init__(self, lanes: Mapping[str, Sequence[str]], default: str) -> None:
        for name in [*lanes, default]:
            if not LANE_NAME.fullmatch(name):
                raise InvalidInput(f"lanes.{name}", "a lane name is lower-case letters and digits")
        if default in lanes:
            raise InvalidInput(f"lanes.{default}", "the default lane takes no patterns")
        self.lanes = [Lane(name, tuple(patterns)) for name, patterns in lanes.items()]
        self.default = Lane(default, ())
        self._check()
        self._cache: dict[str, str] = {}

    def _check(self) -> None:
        seen: list[tuple[str, str]] = []
        for lane in self.lanes:
            for pattern in lane.patterns:
                if not LANE_PATTERN.fullmatch(pattern) or pattern.count(".") == 0:
                    raise InvalidInput(
                        f"lanes.{lane.name}",
                        f"{pattern!r} is neither an event type nor a prefix like 'alert.*'",
                    )
                for other_lane, other in seen:
                    if overlap(pattern, other):
                        raise InvalidInput(
                            f"lanes.{lane.name}",
                            f"{pattern!r} overlaps {other!r} of lane {other_lane!r}: "
                            "every event type must land in exactly one lane",
                        )
                seen.append((lane.name, pattern))

    @property
    def names(self) -> list[str]:
        return [lane.name for lane in self.lanes] + [self.default.name]

    def resolve(self, event_type: str) -> str:
        """The one lane an event type travels in."""
        lane = self._cache.get(event_type)
        if lane is None:
            lane = next((x.name for x in self.lanes if x.matches(event_type)), self.default.name)
            self._cache[event_type] = lane
        return lane
