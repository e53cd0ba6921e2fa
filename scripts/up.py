"""Run the system: ``python3 scripts/dev.py up`` (or ``python -m scripts.up``).

Starts the embedded Redis when ``REDIS_URL`` is unset, publishes a smoke event
through the event store, and prints the recent history.
"""

from __future__ import annotations

import argparse
import logging
import sys

from eda.core import Core
from eda.errors import EdaError
from eda.redis_server import redis_url
from eda.settings import load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eda up", description=__doc__)
    parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        settings = load()
        url = redis_url(settings)
        core = Core(settings)
        published = core.publish("system.smoke", {"message": "hello"}, "eda-up")
        print(f"event store: {url} (prefix {settings.prefix!r})")
        print(f"published system.smoke as {published.event_id}")
        print("recent events:")
        for stored in core.history(limit=5):
            event = stored.event
            print(f"  {event.timestamp}  {event.type:<24} {event.id}  {stored.status}")
    except EdaError as exc:
        print(f"eda up: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
