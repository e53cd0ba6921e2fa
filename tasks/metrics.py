"""The worker's metrics port: ``/metrics`` of this worker's counts (``eda/metrics.py``).

Off unless ``EDA_WORKER_METRICS_PORT`` is set. A worker whose pool runs in its own
process (threads, the Procfile's; solo, gevent, eventlet) counts in its memory; one
with the prefork pool counts into a folder of its own under ``EDA_METRICS_DIR``
(``worker-<node name>``), emptied as it starts, and its port sums its pool's
processes. Either way the port reports this worker alone, and a restarted worker
starts from zero as Prometheus expects of a new process. A host other than
loopback needs ``EDA_ADMIN_TOKEN``, and a scrape then sends it as a bearer token.
The store's gauges (relay queue, dead letters held, lanes) are the web's
``/metrics``, read once for all workers.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from celery import bootsteps, signals

from eda import metrics
from eda.settings import Settings, load

log = logging.getLogger(__name__)


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(settings: Settings) -> ThreadingHTTPServer:
    """A server of ``GET /metrics`` on the settings' host and port, in a daemon thread."""
    token = settings.admin_token.get_secret_value() if settings.admin_token else None

    class Scrape(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self._answer(404, b"only /metrics is served here\n", "text/plain")
                return
            if token is not None and not _bearer(self.headers.get("Authorization", ""), token):
                self._answer(401, b"send Authorization: Bearer <EDA_ADMIN_TOKEN>\n", "text/plain")
                return
            body, content_type = metrics.exposition()
            self._answer(200, body, content_type)

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("metrics scrape: " + format, *args)

    server = ThreadingHTTPServer(
        (settings.worker_metrics_host, settings.worker_metrics_port), Scrape
    )
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="eda-metrics", daemon=True).start()
    return server


def _bearer(header: str, token: str) -> bool:
    scheme, _, offered = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        offered.strip().encode(), token.encode()
    )


def pooled_processes(worker: Any) -> bool:
    """Whether this worker runs its tasks in processes of their own (the prefork pool)."""
    from celery.concurrency.prefork import TaskPool as Prefork

    pool = getattr(worker, "pool_cls", None)
    return isinstance(pool, type) and issubclass(pool, Prefork)


class MetricsStep(bootsteps.StartStopStep):
    """Counts and serves this worker's metrics from its start until it stops."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.server: ThreadingHTTPServer | None = None
        self.settings = load()
        if not self.settings.worker_metrics_port:
            return
        host = self.settings.worker_metrics_host
        if not loopback(host) and self.settings.admin_token is None:
            raise SystemExit(
                f"eda: EDA_WORKER_METRICS_HOST={host} is not loopback: set EDA_ADMIN_TOKEN, "
                "which scrapes then send as a bearer token"
            )
        if not pooled_processes(parent):
            metrics.enable(None)  # one process counts all: in memory, no file written
            return
        # Enabled here, before the pool starts, so that its processes count too.
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", str(getattr(parent, "hostname", "worker")))
        folder = self.settings.metrics_folder / f"worker-{name}"
        shutil.rmtree(folder, ignore_errors=True)
        metrics.enable(folder)

    def start(self, parent: Any) -> None:
        if self.settings.worker_metrics_port:
            self.server = serve(self.settings)
            host, port = self.server.server_address[:2]
            log.info("metrics on http://%s:%s/metrics", host, port)

    def stop(self, parent: Any) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@signals.worker_process_shutdown.connect
def _pool_process_ended(**_: object) -> None:
    metrics.process_ended()
