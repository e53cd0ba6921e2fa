"""The dead-letter queue: ``get_dlq.py [LIMIT] [EVENT_TYPE] [HANDLER]``, newest first.

Answers ``{"dead_letters": [...], "more": N}``: ``more`` matching letters were left out.
"""

from __future__ import annotations

from typing import Any

from scripts.gantz import arguments, reader, run, whole_number

#: How many dead letters are returned when the caller does not say.
DEFAULT_LIMIT = 50


def main(argv: list[str]) -> dict[str, Any]:
    limit, event_type, handler = arguments(argv, ("limit", "event_type", "handler"))
    count = whole_number(limit, "limit", DEFAULT_LIMIT)
    return reader().dead_letter_page(count, event_type, handler).as_dict()


if __name__ == "__main__":
    run(main)
