"""The processes of one benchmark run: Redis, Celery workers and gunicorn, all on loopback.

Everything is started in a temporary folder with an environment of its own
(``REDIS_URL``, ``CELERY_BROKER_URL``, ``EDA_PREFIX``, ``EDA_ROUTES``, ...), so a run
never touches the operator's Redis or data, and everything is stopped at the end,
whatever happened.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from bench.procfile import ROOT, Procfile, without
from eda.redis_server import free_port, start_server, wait_until_ready

#: The webhook source the suite posts to (``POST /webhooks/bench``).
SOURCE = "bench"
#: Seconds a process may take to say it is ready.
START_TIMEOUT = 60.0
#: Variables of the operator's environment that a run never inherits.
FOREIGN = ("EDA_", "ANTHROPIC_", "REDIS_URL", "CELERY_", "TEST_REDIS_URL")


class Process:
    """One child process with its log; ``stop()`` ends its whole process group."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 (closed in stop)
        self.popen = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until(self, ready: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
        """Poll ``ready`` until it holds; RuntimeError with the log's end when it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                break
            with contextlib.suppress(OSError):
                if ready():
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not start:\n{self.log()[-3000:]}")

    def pids(self) -> list[int]:
        """The process and its children (gunicorn's workers, a prefork pool's processes)."""
        return [self.popen.pid, *_children(self.popen.pid)]

    def rss_bytes(self) -> int:
        """Resident memory of the process and its children."""
        return sum(_rss(pid) for pid in self.pids())

    def terminate(self) -> None:
        """Ask the whole process group to end (SIGTERM), without waiting for it."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.terminate()
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
        self._log.close()


def stop_all(*processes: Process | None) -> None:
    """Stop these processes (None stands for one not started) together: each is asked to
    end before any is waited for, so their shutdowns overlap."""
    started = [process for process in processes if process is not None]
    for process in started:
        process.terminate()
    for process in started:
        process.stop()


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(x) for x in (task / "children").read_text().split()]
    return found


class Stack:
    """The run's folder, Redis server, environment and child processes."""

    def __init__(
        self, folder: Path, procfile: Procfile, messages_url: str, broker_url: str = ""
    ) -> None:
        self.folder = folder
        self.procfile = procfile
        self._exit = ExitStack()
        self.port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.port}/0"
        #: The run's Redis (database 1) unless another broker is named (a RabbitMQ vhost).
        self.broker_url = broker_url or f"redis://127.0.0.1:{self.port}/1"
        self.secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}"
        self.env = self._environment(messages_url)
        self._processes: list[Process] = []

    def _environment(self, messages_url: str) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
        here = ROOT / "bench"
        return {
            **inherited,
            "PYTHONPATH": str(ROOT),
            "REDIS_URL": self.redis_url,
            "CELERY_BROKER_URL": self.broker_url,
            "EDA_PREFIX": self.prefix,
            "EDA_DATA_DIR": str(self.folder / "data"),
            "EDA_ROUTES": str(here / "routes.yaml"),
            "EDA_AGENTS": str(here / "agents.yaml"),
            "EDA_HANDLER_MODULES": "agents",
            "EDA_REPLAY_RATE": "1000000",
            f"EDA_WEBHOOK_SECRET_{SOURCE.upper()}": self.secret,
            "ANTHROPIC_BASE_URL": messages_url,
            "ANTHROPIC_API_KEY": "bench-key-not-a-secret",
        }

    def __enter__(self) -> Stack:
        process = start_server(self.folder / "redis", self.port)
        self._exit.callback(_terminate, process)
        wait_until_ready(self.redis_url)
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self._processes:  # every one asked first, so their shutdowns overlap
            process.terminate()
        self._exit.close()

    def _start(self, name: str, command: list[str], more: dict[str, str] | None = None) -> Process:
        """A child with the run's environment (and ``more`` variables), ended at exit."""
        process = Process(name, command, {**self.env, **(more or {})}, self.folder / f"{name}.log")
        self._exit.callback(process.stop)
        self._processes.append(process)
        return process

    def worker(self, name: str, more: dict[str, str] | None = None) -> Process:
        """A worker of the project, started as the Procfile starts it (``more``: variables)."""
        arguments = self.procfile.celery_worker()
        return self._celery(name, arguments, more)

    def raw_worker(self, name: str, *, events: bool = False) -> Process:
        """A raw Celery worker (``bench.raw_celery``) with the Procfile's pool and concurrency.

        With ``events`` it also sends task events (``-E``), as the Procfile's worker does
        for Flower; kombu's own Redis transport, as raw Celery ships.
        """
        arguments = without(
            self.procfile.celery_worker(), "-E", "--events", "--without-relay", valued=("-A", "-Q")
        )
        flags = ["-E"] if events else []
        return self._celery(name, ["-A", "bench.raw_celery", *arguments, *flags, "-Q", "bench_raw"])

    def worker_and_relay(
        self,
        name: str,
        relay: str,
        more: dict[str, str] | None = None,
        relay_more: dict[str, str] | None = None,
    ) -> tuple[Process, Process | None]:
        """:meth:`worker` and :meth:`relay` started together (their imports overlap) and
        back once both are ready; ``relay_more``: the relay's variables, else ``more``."""
        worker, ready = self._start_celery(name, self.procfile.celery_worker(), more)
        relayed = self._start_relay(relay, more if relay_more is None else relay_more)
        worker.wait_until(ready)
        if relayed is not None:
            relayed[0].wait_until(relayed[1])
        return worker, relayed and relayed[0]

    def _celery(
        self, name: str, arguments: list[str], more: dict[str, str] | None = None
    ) -> Process:
        process, ready = self._start_celery(name, arguments, more)
        process.wait_until(ready)
        return process

    def _start_celery(
        self, name: str, arguments: list[str], more: dict[str, str] | None
    ) -> tuple[Process, Callable[[], bool]]:
        """A Celery worker started, and the test of its being ready."""
        # Mingle and gossip only cost start-up time: a run's workers need no peers.
        node = f"{name}-{self.prefix}@{socket.gethostname()}"
        command = [
            *(sys.executable, "-m", "celery", *arguments, "-n", node),
            *("--without-mingle", "--without-gossip"),
        ]
        process = self._start(name, command, more)
        return process, lambda: b" ready." in process.log_path.read_bytes() or _pong(node)

    def relay(self, name: str, more: dict[str, str] | None = None) -> Process | None:
        """The Procfile's relay process, when it has one (else the workers relay)."""
        started = self._start_relay(name, more)
        if started is None:
            return None
        started[0].wait_until(started[1])
        return started[0]

    def _start_relay(
        self, name: str, more: dict[str, str] | None
    ) -> tuple[Process, Callable[[], bool]] | None:
        command = self.procfile.relay_command()
        if command is None:
            return None
        process = self._start(name, command, more)
        return process, lambda: b"relay started" in process.log_path.read_bytes()

    def webs(self, *specs: tuple[str, str, dict[str, str] | None]) -> list[tuple[Process, int]]:
        """gunicorn serving ``app`` as the Procfile serves the webhooks, for each (name, app,
        variables), started together (their imports overlap on a machine of several cores)
        and back once every one answers; with each its port."""
        started = [self.start_web(name, app, more) for name, app, more in specs]
        for process, port in started:
            wait_answering(process, port)
        return started

    def start_web(
        self, name: str, app: str, more: dict[str, str] | None = None
    ) -> tuple[Process, int]:
        """gunicorn started on a free port, not waited for (see :func:`wait_answering`)."""
        port = free_port()
        command = [sys.executable, "-m", "gunicorn", *self.procfile.gunicorn(app, port)]
        return self._start(name, command, more), port


def wait_answering(process: Process, port: int) -> None:
    """Wait until the web ``process`` answers ``GET /healthz`` on ``port``."""
    process.wait_until(functools.partial(answers, port))


def _pong(node: str) -> bool:
    """True when the worker ``node`` answers a ping (its "ready" line may not be logged)."""
    import tasks

    return bool(tasks.app.control.ping(destination=[node], timeout=0.2))


def answers(port: int) -> bool:
    """Whether a web on ``port`` answers ``GET /healthz`` with 200."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    finally:
        connection.close()


def _terminate(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=10)
