"""Who runs the relay (``eda/relay.py``): a process of its own, or every worker.

``python -m tasks.relay`` is the Procfile's ``relay`` process, and its workers
run with ``--without-relay``: relaying then costs them nothing, which is most of
what a no-op delivery costs. A worker started without that flag runs a relay
thread beside its pool (:class:`RelayStep`), so a deployment of workers alone
(and the test suite's) still dispatches what the web stored.

``tasks/__init__.py`` names the step and its option without importing this
module, so that ``python -m tasks.relay`` runs it once, as ``__main__``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from typing import Any

from celery import bootsteps

from eda.errors import EdaError
from eda.relay import WAIT, Relay

log = logging.getLogger(__name__)


class RelayStep(bootsteps.StartStopStep):
    """Starts the relay thread when the worker starts; stops it when it stops."""

    def __init__(self, parent: Any, without_relay: bool = False, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.enabled = not without_relay
        self.name = str(getattr(parent, "hostname", "worker"))
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, parent: Any) -> None:
        self.thread = threading.Thread(target=self._run, name="eda-relay", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from tasks.worker import worker_core

        Relay(worker_core(), name=self.name).run(self.stopping)

    def stop(self, parent: Any) -> None:
        self.stopping.set()
        if self.thread is not None:
            from tasks.worker import worker_core

            wake(Relay(worker_core(), name=self.name))
            self.thread.join(timeout=WAIT + 1.0)


def wake(relay: Relay) -> None:
    """End the relay's wait for work (a store that is away: the wait ends by its timeout)."""
    with contextlib.suppress(EdaError):
        relay.wake()


def main() -> None:
    """Relay until SIGTERM or SIGINT (the Procfile's ``relay`` process)."""
    from eda import traces
    from tasks import _configure_logging, connect

    _configure_logging()
    core = connect()
    traces.enable(core.settings)  # only when OTEL_EXPORTER_OTLP_ENDPOINT is set
    relay = Relay(core, name=f"{socket.gethostname()}:{os.getpid()}")
    stopping = threading.Event()

    def stop(*_: object) -> None:
        # The wait for work ends now, not when its timeout does: woken from a thread, for
        # the signal may come while this one holds a connection of the pool.
        stopping.set()
        threading.Thread(target=wake, args=(relay,), daemon=True).start()

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, stop)
    log.info("relay started")
    relay.run(stopping)
    log.info("relay stopped")
    traces.disable()  # exports what is pending


if __name__ == "__main__":
    main()
