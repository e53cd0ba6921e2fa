"""What can go wrong, arranged by what the caller should do about it.

::

    EdaError
     ├── InvalidInput        the caller's input is wrong: say which field and why
     │    └── NotFound        an id that names nothing
     ├── StoreUnavailable    Redis cannot be reached: try again later (HTTP 503)
     ├── NoBroker            dispatch asked of a core built without a broker: a
     │                       misconfiguration an operator fixes; retrying cannot help
     └── DeliveryError       raised by handlers
          ├── TransientError  retry with backoff (timeouts, 429, 5xx, a flaky peer)
          │    └── ModelBusy  the model API asked everyone to wait: its deliveries pause
          └── PermanentError  dead-letter at once, retrying cannot help

A retry that a handler asks for with a delay is not an error: it is
:class:`TransientError` with ``retry_after`` set, and is logged as a retry.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import redis


class EdaError(Exception):
    """Base of every error the project raises on purpose."""


class InvalidInput(EdaError, ValueError):
    """Input that cannot be accepted; ``field`` says where, ``reason`` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def as_dict(self) -> dict[str, str]:
        return {"error": "invalid_input", "field": self.field, "message": self.reason}


class NotFound(InvalidInput, LookupError):
    """An event id, dead letter or handler that does not exist."""

    def as_dict(self) -> dict[str, str]:
        return {"error": "not_found", "field": self.field, "message": self.reason}


class StoreUnavailable(EdaError):
    """The event store's Redis did not answer; nothing was written."""


#: Redis error replies that mean "not now", not "wrong" (also inside a script's error):
#: the store is unavailable.
UNAVAILABLE_REPLY = re.compile(r"(^|-)(NOREPLICAS|READONLY|MASTERDOWN|LOADING|TRYAGAIN) ")


@contextmanager
def reaching_redis() -> Iterator[None]:
    """Turn a Redis that cannot be reached into StoreUnavailable (the one translator)."""
    try:
        yield
    except redis.ConnectionError as exc:
        raise StoreUnavailable(f"the event store's Redis is unreachable: {exc}") from exc
    except redis.TimeoutError as exc:
        raise StoreUnavailable(f"the event store's Redis timed out: {exc}") from exc
    except redis.ResponseError as exc:
        # A primary that may not take writes just now (a failover, no replica in reach
        # under min-replicas-to-write, a replica still loading): try again later.
        if isinstance(exc, redis.ReadOnlyError) or UNAVAILABLE_REPLY.search(str(exc)):
            raise StoreUnavailable(f"the event store's Redis refuses writes: {exc}") from exc
        raise


class NoBroker(EdaError):
    """This core has no broker to dispatch with (built without ``tasks.connect()``)."""


class DeliveryError(EdaError):
    """Raised by a handler to say how its delivery failed."""


class TransientError(DeliveryError):
    """Worth another try later; ``retry_after`` (seconds) asks for a minimum wait."""

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelBusy(TransientError):
    """The model API asked every caller to wait (a 429 or 529 with ``retry-after``).

    Beside the retry of the one delivery, every delivery of that model waits.
    """


class PermanentError(DeliveryError):
    """Retrying cannot help: the delivery goes to the dead-letter queue at once."""
