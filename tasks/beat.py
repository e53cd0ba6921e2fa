"""Beat's scheduler: an outage of the broker is one warning when it starts, one line when it ends.

Celery's scheduler logs every entry it could not send as an error with the
stack and the traceback (``Scheduler.apply_entry``): with a sweep every few
seconds, a minute without Redis filled the log with tracebacks that all said
the same thing. This scheduler sends as Celery's does, and says what an
outage is: when it starts (the first entry that could not be sent, with the
error's class and text), and when it ends (how many sends failed meanwhile).

``celeryconfig.beat_scheduler`` selects it; it keeps the schedule in memory, as
Celery's default scheduler does without its shelve file.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.beat import Scheduler as CeleryScheduler

from eda import logs

log = logging.getLogger(__name__)


class Scheduler(CeleryScheduler):
    """Celery's in-memory scheduler, logging an outage once rather than a traceback per send."""

    #: Sends that failed since the outage began (0: no outage).
    failed = 0

    def apply_entry(self, entry: Any, producer: Any = None) -> None:
        log.info("Scheduler: Sending due task %s (%s)", entry.name, entry.task)
        try:
            self.apply_async(entry, producer=producer, advance=False)
        except Exception as exc:
            if not self.failed:
                log.warning(
                    "beat cannot send %s, and tries again on schedule: %s",
                    entry.name,
                    logs.error_summary(exc),
                )
            self.failed += 1
            return
        if self.failed:
            log.warning("beat sends again; %d sends failed during the outage", self.failed)
            self.failed = 0
