"""The worker's heartbeat: alive, and holding these tasks (see ``eda/liveness.py``).

A thread beside the pool writes, every ``EDA_HEARTBEAT_INTERVAL`` seconds, the
ids of the tasks this worker holds: reserved (prefetched, or waiting for a
retry's countdown) and running. Recovery trusts those deliveries to this worker
while the heartbeat lasts; a worker killed with ``kill -9`` stops beating, and
what it held is sent again within a few intervals.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import bootsteps
from celery.worker import state

log = logging.getLogger(__name__)


def held_task_ids() -> set[str]:
    """Ids of the tasks this worker process has reserved or is running."""
    requests = [*list(state.reserved_requests), *list(state.active_requests)]
    return {str(request.id) for request in requests}


class HeartbeatStep(bootsteps.StartStopStep):
    """Beats from the worker's start until it stops."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.name = str(getattr(parent, "hostname", "worker"))

    def start(self, parent: Any) -> None:
        self.thread = threading.Thread(target=self._run, name="eda-heartbeat", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from tasks.worker import worker_core

        liveness = worker_core().liveness
        quiet = False
        while not self.stopping.is_set():
            try:
                liveness.beat("worker", self.name, held_task_ids())
                if quiet:
                    log.info("heartbeat reaches the store again")
                quiet = False
            except Exception as exc:
                if not quiet:  # once per outage, not once per beat
                    log.warning("heartbeat cannot reach the store: %s", type(exc).__name__)
                quiet = True
            self.stopping.wait(liveness.interval)

    def stop(self, parent: Any) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=2.0)
