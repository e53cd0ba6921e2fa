"""A fault run's processes: the Procfile's web, worker, relay and beat on private Redis servers.

Three servers, each with append-only persistence: the event store, the broker
(apart, so that the broker alone can be made unreachable; the Redis faults
stop both at once, as one Redis restart would), and the record server where
handlers count their runs, which no fault touches. Given a broker URL (a
RabbitMQ node's, say), the run uses that broker instead of a Redis of its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import redis

from bench.faults import handlers
from bench.procfile import WEB_APP, Procfile
from bench.services import Process, Stack, wait_answering
from eda.redis_server import free_port, start_server, wait_until_ready

HERE = Path(__file__).resolve().parent


class Server:
    """One redis-server of the run, which a fault may stop, kill and start again."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, database: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{database}"

    def start(self, appendfsync: str = "everysec") -> None:
        self.process = start_server(self.folder, self.port, appendfsync=appendfsync)
        wait_until_ready(self.url())

    def stop(self, how: str = "shutdown") -> None:
        """``shutdown`` (SIGTERM: Redis syncs and exits) or ``kill`` (SIGKILL)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL if how == "kill" else signal.SIGTERM)
            self.process.wait(timeout=30)
            self.process = None


class FaultStack(Stack):
    """A :class:`~bench.services.Stack` with servers that fail, and the fault routes."""

    def __init__(
        self, folder: Path, procfile: Procfile, settings: dict[str, str], broker_url: str = ""
    ) -> None:
        super().__init__(folder, procfile, "http://127.0.0.1:9")  # no agent runs here
        self.store = Server(folder / "store")
        #: The run's own Redis broker; None on a broker given by URL.
        self.broker: Server | None = None if broker_url else Server(folder / "broker")
        self.record = Server(folder / "record")
        self.appendfsync = "everysec"
        self.redis_url = self.store.url(0)
        self.broker_url = broker_url or self.broker.url(0)  # type: ignore[union-attr]
        self.env.update(
            {
                "REDIS_URL": self.redis_url,
                "CELERY_BROKER_URL": self.broker_url,
                "EDA_ROUTES": str(HERE / "routes.yaml"),
                "EDA_FAULTS_RECORD_URL": self.record.url(0),
                "EDA_LOG_LEVEL": "info",
                **settings,
            }
        )
        self.workers = 0

    def __enter__(self) -> FaultStack:
        for server in [*self._redis_servers(), self.record]:
            server.start()
            self._exit.callback(server.stop)
        return self

    def _redis_servers(self) -> list[Server]:
        """The store, and the broker when it is the run's own."""
        return [self.store] if self.broker is None else [self.store, self.broker]

    def runs(self) -> dict[str, int]:
        """Finished handler runs by event id, from the record server."""
        client = redis.Redis.from_url(self.record.url(0), decode_responses=True)
        try:
            found: dict[str, str] = client.hgetall(handlers.RUNS)  # type: ignore[assignment]
            return {event_id: int(count) for event_id, count in found.items()}
        finally:
            client.close()

    def sync(self, appendfsync: str) -> None:
        """Make the store and the broker sync their append-only files ``always`` or ``everysec``."""
        self.appendfsync = appendfsync
        for server in self._redis_servers():
            client = redis.Redis.from_url(server.url(0))
            client.config_set("appendfsync", appendfsync)
            client.close()

    def restart_redis(self, how: str, down: float, *, broker_only: bool = False) -> None:
        """Stop the broker (and the store, unless ``broker_only``), wait ``down`` s, start them."""
        assert self.broker is not None, "only the run's own broker is stopped"
        servers = [self.broker] if broker_only else [self.store, self.broker]
        for server in servers:
            server.stop(how)
        time.sleep(down)
        for server in servers:
            server.start(self.appendfsync)

    def start_worker(self) -> Process:
        self.workers += 1
        return self.worker(f"worker-{self.workers}")

    def start_relay(self) -> Process:
        process = self.relay(f"relay-{time.monotonic_ns()}")
        assert process is not None, "the Procfile has a relay line"
        return process

    def start_all(self) -> tuple[int, Process, Process]:
        """The web, a worker, the relay and beat, started together (their imports overlap)
        and back once each is ready: the web's port, the worker and the relay."""
        web, port = self.start_web("web", WEB_APP)
        self.workers += 1
        worker, worker_ready = self._start_celery(
            f"worker-{self.workers}", self.procfile.celery_worker(), None
        )
        relay = self._start_relay(f"relay-{time.monotonic_ns()}", None)
        assert relay is not None, "the Procfile has a relay line"
        command = self.procfile.beat_command()
        assert command is not None, "the Procfile has a beat line"
        beat = self._start("beat", command)
        wait_answering(web, port)
        worker.wait_until(worker_ready)
        relay[0].wait_until(relay[1])
        beat.wait_until(lambda: b"beat: Starting" in beat.log_path.read_bytes())
        return port, worker, relay[0]


def kill(process: Process) -> None:
    """``kill -9`` of a process and its group, as an operator's or the kernel's would be."""
    os.killpg(process.popen.pid, signal.SIGKILL)
    process.popen.wait(timeout=10)
