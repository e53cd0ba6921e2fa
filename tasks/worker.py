"""The worker process's core, built once, and the configuration check at its start."""

from __future__ import annotations

import logging
import threading

from celery import signals

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
