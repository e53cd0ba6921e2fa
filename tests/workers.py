"""Real Celery workers for the tests, as subprocesses of ``celery -A tasks worker``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from eda.core import Core

ROOT = Path(__file__).resolve().parent.parent

#: Settings that make retries take milliseconds instead of minutes.
FAST = {
    "EDA_RETRY_BACKOFF": "0.05",
    "EDA_RETRY_BACKOFF_MAX": "0.4",
    "EDA_MAX_RETRIES": "3",
    "EDA_ROUTES": str(ROOT / "tests" / "routes.yaml"),
    "EDA_OUTBOX_GRACE": "0.5",
    "EDA_HANDLER_MODULES": "tests.handlers",
}


def run_python(program: str, timeout: float, **env: str) -> subprocess.CompletedProcess[str]:
    """``program`` run by this Python from the project's folder, with the project on its path
    and ``env`` added to the environment; its output captured, and an error unless it exits 0."""
    return subprocess.run(
        [sys.executable, "-c", program],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )


class Worker:
    """One worker process; ``stop()`` ends it gracefully, ``kill()`` with SIGKILL.

    ``queues`` (``-Q``) narrows it to some lanes; by default it consumes every lane
    ``celeryconfig.py`` declares, as the Procfile's worker does.
    """

    def __init__(
        self,
        log_path: Path,
        env: dict[str, str] | None = None,
        queues: str | None = None,
        concurrency: int = 4,
        name: str = "test",
        options: tuple[str, ...] = (),
    ) -> None:
        self.log_path = log_path
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
        # Never the real model API: a test that wants one points the worker at its own server.
        environment = {**inherited, **FAST, **(env or {}), "PYTHONPATH": str(ROOT)}
        #: The worker's node name, as ``inspect`` and ``control`` address it.
        self.node = f"{name}-{os.getpid()}-{time.monotonic_ns()}@{socket.gethostname()}"
        command = [
            *(sys.executable, "-m", "celery", "-A", "tasks", "worker", "-n", self.node),
            *(["-Q", queues] if queues else []),
            *("-P", "threads", "-c", str(concurrency)),
            *("--without-mingle", "--without-gossip", "-l", "INFO", *options),
        ]
        self._log = open(log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b" ready." in self.log_path.read_bytes():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"worker did not start:\n{self.log_path.read_text()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self._log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()


@contextmanager
def core_with_worker(env: dict[str, str], folder: Path) -> Iterator[Core]:
    """A worker of its own with these variables (its own broker and prefix, say), and the
    dispatching core of the same settings, its routes and handlers included."""
    import tasks
    from eda.settings import load
    from tasks.enqueue import CeleryEnqueuer

    worker = Worker(folder / "worker.log", env=env)
    settings = load({**os.environ, **FAST, **env})
    registry, routes = tasks.handlers(settings)
    enqueuer = CeleryEnqueuer(tasks.app, broker_url=env["CELERY_BROKER_URL"])
    try:
        yield Core(settings, enqueuer=enqueuer, routes=routes, handlers=registry)
    finally:
        worker.stop()


def module_env(
    name: str, redis_url: str, database: int, routes: Path, model_url: str = "", **more: str
) -> dict[str, str]:
    """A module's worker variables: a prefix and broker database of its own, its routes
    file, and (given ``model_url``) its agents' model at a local Messages API server."""
    env = {
        "EDA_PREFIX": f"{name}-{os.urandom(4).hex()}",
        "CELERY_BROKER_URL": redis_url.rsplit("/", 1)[0] + f"/{database}",
        "EDA_ROUTES": str(routes),
        **more,
    }
    if model_url:
        env |= {"ANTHROPIC_BASE_URL": model_url, "ANTHROPIC_API_KEY": "sk-ant-test-key"}
    return env
