"""What a handler is, and how it says "not for me".

A handler is a callable ``handler(event: Event) -> dict | None``. It is run by a
Celery task once per delivery (event x handler). What it returns, when a JSON
object, is kept on the delivery as its ``outcome``. It may raise
:class:`~eda.errors.TransientError` (retry with backoff),
:class:`~eda.errors.PermanentError` (dead-letter at once), or :class:`Skip`.
Any other exception counts as transient unless its route declares it permanent.
An exception may carry an ``outcome`` attribute (a JSON object): it is recorded
on the delivery too, so work done before a failure stays visible.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eda.event import Event

#: The signature every handler has.
Handler = Callable[[Event], "dict[str, Any] | None"]


class Skip(Exception):
    """Raised by a handler or pipeline stage: the delivery is recorded ``skipped``.

    ``stage`` names what decided (a filter's name), ``reason`` says why.
    """

    def __init__(self, reason: str, *, stage: str = "", outcome: dict[str, Any] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.stage = stage
        self.outcome = outcome
