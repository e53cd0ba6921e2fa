"""The worker process's core, built once, the configuration check at its start, and
its prompt stop on a signal."""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import socket
import threading
from typing import Any

from celery import bootsteps, signals

from eda import traces
from eda.core import Core
from eda.errors import EdaError

log = logging.getLogger(__name__)

_core: Core | None = None
_core_lock = threading.Lock()


def worker_core() -> Core:
    """This process's core, built once (routes are checked when it is built)."""
    global _core
    with _core_lock:
        if _core is None:
            from tasks import connect

            _core = connect()
        return _core


@signals.worker_init.connect
def _check_configuration(**_: object) -> None:
    """Load routes, agents and handlers as the worker starts: a mistake stops it, clearly.

    Celery logs and swallows an Exception raised by a signal handler, so a bad
    routes file ends the worker with SystemExit and a one-line reason instead.
    """
    try:
        traces.enable(worker_core().settings)  # only when OTEL_EXPORTER_OTLP_ENDPOINT is set
    except EdaError as exc:
        log.critical("configuration error: %s", exc)
        raise SystemExit(f"eda: configuration error: {exc}") from None


@signals.worker_ready.connect
def _freeze_the_start(**_: object) -> None:
    """Keep what the worker's start made out of the garbage collector's full passes.

    Celery, kombu, the core and their modules are some 200,000 objects that live as long
    as the process, and a full collection walks every one, with every pool thread
    stopped: 105-115 ms on the bench's machine. Frozen (``gc.freeze``, the standard
    library's own), they are never walked again; what is made later is collected as
    before. Garbage made at the start is collected first. In a ``--quick`` bench run the
    worker's full collections took 108 ms on average (10 of them, the longest 208 ms)
    without it and 56 ms with it (12, the longest 122 ms): what a worker makes later,
    the SDK of its first agent delivery among it, is still walked.
    """
    gc.collect()
    gc.freeze()


class WakeOnSignal(bootsteps.StartStopStep):
    """A signal wakes the worker's event loop, which then stops at once (SIGTERM, Ctrl-C).

    Celery's signal handlers only set a flag, which the loop reads between two polls;
    Python resumes an interrupted poll until its timeout (up to a second idle), so a
    warm shutdown began up to a second after the signal. Python writes a byte for each
    signal to a socket the loop watches (``signal.set_wakeup_fd``), and the poll returns.
    The socket is watched again at each start of the consumer (a broker reconnection
    clears what the loop watched).
    """

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.sockets: tuple[socket.socket, socket.socket] | None = None

    def start(self, parent: Any) -> None:
        hub = getattr(parent, "hub", None)
        if hub is None or threading.current_thread() is not threading.main_thread():
            return
        if self.sockets is None:
            reader, writer = socket.socketpair()
            reader.setblocking(False)
            writer.setblocking(False)
            signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
            self.sockets = (reader, writer)
        hub.add_reader(self.sockets[0], self._drain)

    def _drain(self) -> None:
        assert self.sockets is not None
        with contextlib.suppress(OSError):
            while self.sockets[0].recv(4096):
                pass
