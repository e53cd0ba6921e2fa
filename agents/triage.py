"""The dead-letter triage agent's own tools: retry a letter (bounded per run), annotate one.

``DeadLetterTriager`` reads the letters with ``get_dead_letters`` and judges each.
Its decisions go through these two tools, so the limits are code, not prompt: a
run retries at most ``EDA_TRIAGE_MAX_RETRIES`` letters (counted in the store per
delivery run, so a resumed run counts what it did before), and with
``EDA_TRIAGE_DRY_RUN`` neither tool changes anything: each answers what it would
have done, which the run's record keeps.
"""

from __future__ import annotations

from typing import Any

from agents.context import DeliveryContext
from agents.toolbox import python_tool
from eda.errors import InvalidInput

#: Who annotations say judged the letter.
TRIAGER = "DeadLetterTriager"
#: What a letter can be judged to be.
CATEGORIES = ["transient", "handler_bug", "bad_input", "unknown"]
#: Seconds a run's retry count is kept.
COUNT_TTL = 24 * 3600

_LETTER = {"type": "string", "description": "The dead letter's id, '<event id>:<handler>'."}
_REASON = {"type": "string", "description": "Why, in one or two sentences, for an operator."}
_CATEGORY = {"type": "string", "enum": CATEGORIES, "description": "What caused the failure."}


@python_tool(
    "retry_dead_letter",
    "Retry one dead letter: its delivery runs again with a fresh retry budget and the "
    "letter leaves the queue. Only for failures whose cause has passed (a transient "
    "outage, a rate limit); a run may retry a limited number.",
    {
        "type": "object",
        "properties": {"dead_letter_id": _LETTER, "reason": _REASON},
        "required": ["dead_letter_id", "reason"],
        "additionalProperties": False,
    },
)
def retry_dead_letter(arguments: dict[str, Any], context: DeliveryContext) -> dict[str, Any]:
    letter_id, settings = arguments["dead_letter_id"], context.settings
    if settings.triage_dry_run:
        return {"dry_run": True, "would_retry": letter_id, "reason": arguments["reason"]}
    core = context.core
    core.dead_letter(letter_id)  # NotFound before the count is spent
    delivery = context.event.delivery
    run_key = core.keys.triage_retries(
        delivery.id if delivery else context.event.id, delivery.run if delivery else 1
    )
    spent = int(core.redis.incr(run_key))
    core.redis.expire(run_key, COUNT_TTL)
    if spent > settings.triage_max_retries:
        raise InvalidInput(
            "dead_letter_id",
            f"this run already retried {settings.triage_max_retries} letters, its limit: "
            "annotate this one instead",
        )
    try:
        return context.dispatching_core().retry_dead_letter(letter_id)
    except Exception:
        core.redis.decr(run_key)  # not retried: it does not count against the limit
        raise


@python_tool(
    "annotate_dead_letter",
    "Note on a dead letter what caused it and why it is not retried; the note stays on "
    "the letter for an operator (eda dlq show).",
    {
        "type": "object",
        "properties": {"dead_letter_id": _LETTER, "category": _CATEGORY, "reason": _REASON},
        "required": ["dead_letter_id", "category", "reason"],
        "additionalProperties": False,
    },
)
def annotate_dead_letter(arguments: dict[str, Any], context: DeliveryContext) -> dict[str, Any]:
    letter_id = arguments["dead_letter_id"]
    if context.settings.triage_dry_run:
        return {"dry_run": True, "would_annotate": letter_id, **arguments}
    letter = context.core.annotate_dead_letter(
        letter_id, arguments["reason"], by=TRIAGER, category=arguments["category"]
    )
    return {"dead_letter_id": letter_id, "annotation": letter.annotation}
