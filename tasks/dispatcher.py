"""Who runs the dispatcher (``eda/dispatcher.py``): a process of its own, or every worker.

``python -m tasks.dispatcher`` is the Procfile's ``dispatcher`` process, and its
workers run with ``--without-dispatcher``: dispatching then costs them nothing,
which is most of what a no-op delivery costs. A worker started without that flag
runs a dispatcher thread beside its pool, so a deployment of workers alone (and
the test suite's) still dispatches what the web stored.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from celery import bootsteps
from click import Option

from eda.dispatcher import WAIT, Dispatcher
from tasks import app

log = logging.getLogger(__name__)


class DispatcherStep(bootsteps.StartStopStep):
    """Starts the dispatcher thread when the worker starts; stops it when it stops."""

    def __init__(self, parent: Any, without_dispatcher: bool = False, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.enabled = not without_dispatcher
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, parent: Any) -> None:
        self.thread = threading.Thread(target=self._run, name="eda-dispatcher", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from tasks.delivery import worker_core

        Dispatcher(worker_core()).run(self.stopping)

    def stop(self, parent: Any) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=WAIT + 1.0)


app.user_options["worker"].add(
    Option(["--without-dispatcher"], is_flag=True, default=False,
           help="Leave dispatching to the dispatcher process (python -m tasks.dispatcher).")
)  # fmt: skip
app.steps["worker"].add(DispatcherStep)


def main() -> None:
    """Dispatch until SIGTERM or SIGINT (the Procfile's ``dispatcher`` process)."""
    from tasks import _configure_logging, connect

    _configure_logging()
    stopping = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stopping.set())
    log.info("dispatcher started")
    Dispatcher(connect()).run(stopping)
    log.info("dispatcher stopped")


if __name__ == "__main__":
    main()
