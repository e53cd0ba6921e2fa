"""Retry policy as data: how often a delivery is tried again, how long it waits, what is final.

A :class:`RetryPolicy` starts from the settings (``EDA_MAX_RETRIES``,
``EDA_RETRY_BACKOFF``, ``EDA_RETRY_BACKOFF_MAX``) and is narrowed per agent
(``retry:`` in agents.yaml) and per route (``retry:`` in the routes file)::

    retry:
      max_retries: 1          # tries after the first; 0 dead-letters on the first failure
      backoff: 0.5            # seconds: the base of the exponential backoff
      backoff_max: 60         # seconds: its cap
      jitter: true            # full jitter under the exponential (false: the exponential itself)
      permanent: [KeyError]   # exception names never retried (class name or module.Class)

Everything here is a pure function of its arguments: testable without a worker.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, replace

from pydantic import BaseModel, ConfigDict, Field

from eda.errors import PermanentError, TransientError
from eda.settings import Settings

#: Retries counted for the exponent at most: 2**20 backoffs are past any cap already.
MAX_EXPONENT = 20


class RetryOverride(BaseModel):
    """The ``retry:`` mapping of a route or an agent: each key left out keeps the default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_retries: int | None = Field(default=None, ge=0, le=100)
    backoff: float | None = Field(default=None, gt=0)
    backoff_max: float | None = Field(default=None, gt=0)
    jitter: bool | None = None
    permanent: tuple[str, ...] = ()


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed delivery is tried again, and after how long."""

    #: Tries after the first before the delivery is dead-lettered.
    max_retries: int = 5
    #: Base of the exponential backoff, seconds.
    backoff: float = 2.0
    #: Cap of the backoff, seconds (a ``retry_after`` is honoured up to it).
    backoff_max: float = 600.0
    #: Full jitter (a uniform draw under the exponential) or the exponential itself.
    jitter: bool = True
    #: Exception names (``KeyError`` or ``package.module.Error``) never retried.
    permanent: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_retries=settings.max_retries,
            backoff=settings.retry_backoff,
            backoff_max=settings.retry_backoff_max,
        )

    def narrowed(self, override: RetryOverride | None) -> RetryPolicy:
        """This policy with what ``override`` sets; its permanent names are added."""
        if override is None:
            return self
        values = override.model_dump(exclude_none=True, exclude={"permanent"})
        return replace(self, **values, permanent=_union(self.permanent, override.permanent))

    def delay(self, retries: int, retry_after: float | None = None) -> float:
        """Seconds before the next try, after ``retries`` earlier retries.

        Exponential (``backoff`` x 2^retries), capped at ``backoff_max``, with full
        jitter when on; never shorter than ``retry_after`` (a 429's wait), which is
        itself capped.
        """
        ceiling = min(self.backoff_max, self.backoff * 2 ** min(retries, MAX_EXPONENT))
        delay = random.uniform(0, ceiling) if self.jitter else ceiling
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max))
        return delay

    def is_permanent(self, exc: BaseException) -> bool:
        """A PermanentError, or an exception this policy names permanent (by class or base)."""
        if isinstance(exc, PermanentError):
            return True
        if isinstance(exc, TransientError) or not self.permanent:
            return False
        names = {cls.__name__ for cls in type(exc).__mro__}
        names |= {f"{cls.__module__}.{cls.__name__}" for cls in type(exc).__mro__}
        return bool(names & set(self.permanent))

    def gives_up(self, exc: BaseException, retries: int) -> bool:
        """True when a failure after ``retries`` retries is final: permanent, or out of budget."""
        return self.is_permanent(exc) or retries >= self.max_retries


def _union(first: Iterable[str], second: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*first, *second]))
