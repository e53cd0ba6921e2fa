"""When the dead-letter triage agent runs: beat's schedule, and letters piling up.

Triage is an agent (``DeadLetterTriager`` in agents/agents.yaml) reached like any
other, through an event: this module publishes ``dlq.triage_requested`` (the
routes send it to the agent), carrying how many letters wait and the run's
limits. At most one request is published per ``EDA_TRIAGE_INTERVAL`` and cause
(its dedupe key is the interval's number), so a sweep every few seconds that
finds the queue long asks once, not once a sweep. Off unless ``EDA_TRIAGE=1``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Literal

from eda.store import Published

if TYPE_CHECKING:
    from eda.core import Core

#: The event type that starts a triage run.
REQUESTED = "dlq.triage_requested"
#: Why a triage run was asked for.
Cause = Literal["schedule", "pile-up"]


def request_triage(core: Core, cause: Cause) -> Published | None:
    """Ask the triage agent to run, when triage is on and there are letters (for a pile-up,
    at least ``EDA_TRIAGE_THRESHOLD``); None when nothing was asked."""
    settings = core.settings
    letters = core.dead_letters.count()
    if not settings.triage or letters == 0:
        return None
    if cause == "pile-up" and not (
        settings.triage_threshold and letters >= settings.triage_threshold
    ):
        return None
    window = int(time.time() // settings.triage_interval)
    payload = {
        "cause": cause,
        "dead_letters": letters,
        "max_retries": settings.triage_max_retries,
        "dry_run": settings.triage_dry_run,
    }
    return core.publish(REQUESTED, payload, "beat", dedupe_key=f"triage:{cause}:{window}")
