"""The dead-letter queue: deliveries that failed for good, kept in Redis until handled.

A dead letter's id is ``<event id>:<handler>``: one per delivery, so dying twice
replaces the entry rather than piling up copies.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from dataclasses import asdict, dataclass, replace
from itertools import islice
from typing import Any

import redis

from eda import lua
from eda.errors import InvalidInput, NotFound, reaching_redis
from eda.keys import Keys

#: Longest traceback kept on a dead letter, in characters (the end is kept).
MAX_TRACEBACK = 4000
#: Longest error message kept.
MAX_MESSAGE = 2000


@dataclass(frozen=True)
class DeadLetter:
    """A delivery that will not be tried again unless an operator says so."""

    event_id: str
    event_type: str
    handler: str
    error_class: str
    error: str
    traceback: str
    attempts: int
    first_failure_at: str
    last_failure_at: str
    task_id: str
    #: Who judged the letter and why (``by``, ``reason``, ``category``, ``at``), when anyone
    #: did: the triage agent's note for an operator, shown by ``eda dlq show``.
    annotation: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        return letter_id(self.event_id, self.handler)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, **asdict(self)}

    def as_record(self) -> dict[str, Any]:
        """The fields as the store keeps them."""
        return asdict(self)

    def trimmed(self) -> DeadLetter:
        """This letter with its message and traceback cut to what is kept."""
        return replace(
            self, error=self.error[:MAX_MESSAGE], traceback=self.traceback[-MAX_TRACEBACK:]
        )


@dataclass(frozen=True)
class DeadLetterPage:
    """The newest matching dead letters, and how many more match beyond them."""

    letters: list[DeadLetter]
    #: Matching letters left out of the page.
    more: int

    def as_dict(self) -> dict[str, Any]:
        return {"dead_letters": [letter.as_dict() for letter in self.letters], "more": self.more}


def letter_id(event_id: str, handler: str) -> str:
    return f"{event_id}:{handler}"


class DeadLetters:
    """List, read and remove dead letters under one key prefix.

    A dead letter is written by the delivery step that records the ``dead`` status
    (``eda/delivery.py``), in the same script call, never on its own; a retry takes
    it in the step that queues the delivery again, and a refused retry puts it back.
    """

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self.remove_script = lua.load(client, "remove_dead_letter")
        self.annotate_script = lua.load(client, "annotate_dead_letter")

    def get(self, dead_letter_id: str) -> DeadLetter:
        raw = self._guard(lambda: self.redis.get(self.keys.dead_letter(dead_letter_id)))
        if raw is None:
            raise NotFound("dead_letter_id", f"no dead letter {dead_letter_id!r}")
        return DeadLetter(**json.loads(raw))

    def newest(
        self,
        limit: int = 50,
        event_type: str | None = None,
        handler: str | None = None,
        skip: Collection[str] = (),
    ) -> list[DeadLetter]:
        """Newest first, filtered by event type and handler, passing over the ids in ``skip``."""
        if not 1 <= limit <= 10_000:
            raise InvalidInput("limit", "must be between 1 and 10000")
        return list(islice(self._matching(event_type, handler, skip, max(limit, 200)), limit))

    def page(
        self, limit: int = 50, event_type: str | None = None, handler: str | None = None
    ) -> DeadLetterPage:
        """The newest ``limit`` matching letters, and how many more match beyond them."""
        letters = self.newest(limit, event_type, handler)
        return DeadLetterPage(letters, max(0, self.count(event_type, handler) - len(letters)))

    def count(self, event_type: str | None = None, handler: str | None = None) -> int:
        """How many letters there are, or (filtered) match; a filter reads every letter."""
        if not event_type and not handler:
            return int(self._guard(lambda: self.redis.zcard(self.keys.dlq)))
        return sum(1 for _ in self._matching(event_type, handler, (), 1000))

    def _matching(
        self, event_type: str | None, handler: str | None, skip: Collection[str], batch: int
    ) -> Iterator[DeadLetter]:
        offset = 0
        while True:
            ids = self._guard(
                lambda o=offset: self.redis.zrevrange(self.keys.dlq, o, o + batch - 1)
            )
            if not ids:
                return
            raws = self._guard(lambda i=ids: self.redis.mget([self.keys.dead_letter(x) for x in i]))
            for raw in raws:
                if raw is None:
                    continue
                letter = DeadLetter(**json.loads(raw))
                if letter.id in skip:
                    continue
                if event_type and letter.event_type != event_type:
                    continue
                if handler and letter.handler != handler:
                    continue
                yield letter
            offset += batch

    def remove(self, dead_letter_id: str) -> bool:
        """Remove a dead letter for good (a retry's is taken by the step that queues it)."""
        removed = self._guard(
            lambda: self.remove_script(
                keys=[self.keys.dead_letter(dead_letter_id), self.keys.dlq],
                args=[dead_letter_id],
            )
        )
        return bool(removed)

    def annotate(self, dead_letter_id: str, annotation: dict[str, Any]) -> bool:
        """Keep ``annotation`` on a dead letter; False when there is no such letter."""
        annotated = self._guard(
            lambda: self.annotate_script(
                keys=[self.keys.dead_letter(dead_letter_id)], args=[json.dumps(annotation)]
            )
        )
        return bool(annotated)

    @staticmethod
    def _guard(call: Any) -> Any:
        with reaching_redis():
            return call()
