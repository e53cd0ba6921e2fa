"""Fixtures: a private Redis server for the session, and a fresh key prefix per test.

The suite never touches a Redis server it did not start, unless TEST_REDIS_URL
names one. With ``--broker=rabbitmq`` the Celery broker is a RabbitMQ node the
suite starts (``tests/brokers.py``), and only the tests marked ``brokers`` (about
delivery, whatever the broker) and not ``redis_broker`` (about kombu's Redis
transport) are selected; the others are reported deselected. Celery workers
(see ``tests/workers.py``) are started once per session and share the session's
prefix; tests that use them pick event types of their own so that they never see
each other's deliveries.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from eda.core import Core
from eda.redis_server import free_port, start_server, wait_until_ready
from eda.settings import Settings, load
from tests.brokers import (
    NO_RABBITMQ,
    SESSION_SLOT,
    Broker,
    RabbitBroker,
    RedisBroker,
    rabbitmq_script,
)


def end(process: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """Stop a child with SIGTERM; one still running after ``grace`` seconds (a busy
    machine) is killed, so no test leaves a process behind."""
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _group_alive(group: int) -> bool:
    """Whether a process of this group still runs (one that ended but is not reaped yet, a
    zombie, does not count: an orphan is reaped by init, in its own time)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] not in ("Z", "X"):
            return True
    return False


def end_group(process: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """Stop a child started with ``start_new_session=True`` and everything it started: SIGTERM
    to its process group, SIGKILL to what is left after ``grace`` seconds, and back only once
    no process of the group remains (a shell's children outlive a SIGTERM to the shell)."""
    group = process.pid

    def ended() -> bool:
        return process.poll() is not None and not _group_alive(group)

    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    with contextlib.suppress(AssertionError):
        wait_for(ended, timeout=grace)
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    try:
        wait_for(ended, timeout=10.0)
    except AssertionError:
        raise AssertionError(f"process group {group} still runs after SIGKILL") from None


class RedisServer:
    """A redis-server process of the test suite's own, with its data in a temporary folder.

    Persisted in an append-only file, synced to disk every second or ``appendfsync``.
    """

    def __init__(self, folder: Path, appendfsync: str = "everysec") -> None:
        self.folder = folder
        self.appendfsync = appendfsync
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = start_server(self.folder, self.port, appendfsync=self.appendfsync)
        wait_until_ready(self.url)

    def kill(self) -> None:
        """End the server with SIGKILL: what it had not synced to disk is lost."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        """Stop the server the way an operator would (it rewrites nothing on the way out);
        one that does not stop within ten seconds (a busy machine) is killed."""
        if self.process is not None:
            end(self.process)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


_server: RedisServer | None = None
_folder: tempfile.TemporaryDirectory[str] | None = None
_broker: Broker | None = None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--broker",
        choices=("redis", "rabbitmq"),
        default="redis",
        help="the Celery broker the delivery tests run on (rabbitmq: a node the suite starts)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Start the session's Redis before anything is imported that reads the environment.

    The Celery app reads its broker from the environment when first configured, so
    REDIS_URL and CELERY_BROKER_URL are pointed at this server (the broker on db 1,
    apart from the event store's keys) for the whole run.
    """
    global _server, _folder, _broker
    config.addinivalue_line("markers", "brokers: about delivery; runs on every broker")
    config.addinivalue_line("markers", "redis_broker: about kombu's Redis transport itself")
    _folder = tempfile.TemporaryDirectory(prefix="eda-redis-")
    _server = RedisServer(Path(_folder.name))
    if os.environ.get("TEST_REDIS_URL"):
        _server.url = os.environ["TEST_REDIS_URL"]
    else:
        _server.start()
    os.environ["REDIS_URL"] = _server.url
    _broker = _start_broker(config.getoption("broker"), Path(_folder.name))
    os.environ["CELERY_BROKER_URL"] = _broker.url(SESSION_SLOT)
    os.environ.setdefault("EDA_PREFIX", f"session-{uuid.uuid4().hex[:8]}")
    os.environ["EDA_DATA_DIR"] = str(Path(_folder.name) / "data")
    # Set after the session's servers started: what carries it was started by a test.
    os.environ[RUN_MARK] = uuid.uuid4().hex


def _start_broker(name: str, folder: Path) -> Broker:
    assert _server is not None
    if name == "redis":
        return RedisBroker(_server.url)
    if os.environ.get("TEST_AMQP_URL"):
        return RabbitBroker.external(os.environ["TEST_AMQP_URL"], folder)
    if rabbitmq_script() is None:
        raise pytest.UsageError(NO_RABBITMQ)
    (folder / "rabbitmq").mkdir()
    broker = RabbitBroker(folder / "rabbitmq")
    broker.start()
    return broker


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On RabbitMQ, keep the tests about delivery (``brokers``) that are not Redis's own."""
    if config.getoption("broker") == "redis":
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        applies = item.get_closest_marker("brokers") and not item.get_closest_marker("redis_broker")
        (keep if applies else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


#: The variable that marks every process the tests start (they inherit the environment).
RUN_MARK = "TEST_SUITE_RUN"


def left_behind(wait: float = 10.0) -> dict[int, str]:
    """{pid: command line} of the processes a test started that still run, once those ending
    had ``wait`` seconds to end: what a fixture failed to stop."""
    mark = f"{RUN_MARK}={os.environ[RUN_MARK]}".encode()
    found: dict[int, str] = {}

    def none_left() -> bool:
        found.clear()
        for environ in Path("/proc").glob("[0-9]*/environ"):
            pid = int(environ.parent.name)
            try:
                marked = pid != os.getpid() and mark in environ.read_bytes().split(b"\0")
                command = (environ.parent / "cmdline").read_bytes()
            except OSError:
                continue
            if marked and command:  # a zombie has no command line
                found[pid] = command.replace(b"\0", b" ").decode(errors="replace").strip()
        return not found

    with contextlib.suppress(AssertionError):
        wait_for(none_left, timeout=wait, interval=0.1)
    return found


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Fail the run when a test left a process running (and end it, so nothing stays)."""
    leftovers = left_behind()
    if not leftovers:
        return
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"{len(leftovers)} processes started by tests still ran at the end (killed):"]
    lines += [f"  {pid} {command}" for pid, command in sorted(leftovers.items())]
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line("\n".join(lines), red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    if isinstance(_broker, RabbitBroker):
        _broker.stop()
    if _server is not None:
        _server.stop()
    if _folder is not None:
        _folder.cleanup()


@pytest.fixture(scope="session")
def redis_server() -> RedisServer:
    assert _server is not None
    return _server


@pytest.fixture(scope="session")
def broker_under_test() -> Broker:
    """The session's broker: private brokers by number, and what waits in a lane."""
    assert _broker is not None
    return _broker


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_settings(redis_server: RedisServer, prefix: str) -> Callable[..., Settings]:
    """Settings for this test's prefix on the session's Redis, with overrides."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "redis_url": redis_server.url,
            "prefix": prefix,
            "handler_modules": ("tests.handlers",),
        }
        values.update(overrides)
        return load({}, **values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield connection
    connection.close()


@pytest.fixture
def core(settings: Settings, client: redis.Redis) -> Core:
    """The core API on this test's prefix, with no broker: events stay pending."""
    return Core(settings, client)


@pytest.fixture(scope="session")
def live_settings(redis_server: RedisServer) -> Settings:
    """Settings of the session's workers: the session prefix and fast retries."""
    from tests.workers import FAST

    return load({**os.environ, **FAST})


@pytest.fixture(scope="session")
def worker(live_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Celery worker on every lane, shared by the session (tests use types of their own)."""
    from tests.workers import Worker

    started = Worker(tmp_path_factory.mktemp("worker") / "worker.log")
    yield started
    started.stop()


@pytest.fixture(scope="session")
def live(worker: Any, live_settings: Settings) -> Core:
    """The dispatching core (tasks.connect) on the session workers' prefix."""
    import tasks

    return tasks.connect(live_settings)


@pytest.fixture
def unique_type() -> Callable[[str], str]:
    """Event types of this test's own, so shared workers never mix tests up."""
    tag = f"t{uuid.uuid4().hex[:10]}"

    def make(name: str = "event", lane: str = "") -> str:
        return f"{lane}.{tag}_{name}" if lane else f"{tag}.{name}"

    return make


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.02) -> Any:
    """Poll until ``predicate()`` is truthy and return it; fail with a clear message."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def settled(
    core: Core, event_id: str, handler: str, *statuses: str, timeout: float = 15.0
) -> dict[str, Any]:
    """The event's delivery to ``handler`` once it reaches one of ``statuses``."""

    def reached() -> dict[str, Any] | None:
        found = core.get_event(event_id).deliveries.get(handler, {})
        return found if found.get("status") in statuses else None

    return wait_for(reached, timeout=timeout)


@pytest.fixture
def private_broker(
    broker_under_test: Broker, live: Core, live_settings: Settings, client: redis.Redis
) -> Iterator[Callable[[int], tuple[str, Core]]]:
    """A broker of a test's own (a Redis database, a RabbitMQ vhost) and a core sending to it;
    emptied afterwards."""
    from tasks import app
    from tasks.enqueue import CeleryEnqueuer

    used: list[str] = []

    def make(slot: int) -> tuple[str, Core]:
        broker = broker_under_test.url(slot)
        used.append(broker)
        return broker, Core(live_settings, client, CeleryEnqueuer(app, broker), live.routes)

    yield make
    for broker in used:
        broker_under_test.empty(broker)


@pytest.fixture
def refusing_broker(monkeypatch: pytest.MonkeyPatch) -> str:
    """The URL of a broker that refuses every connection (a port nothing listens on).

    The connections this test's enqueuers open give up at the first refusal, where kombu's
    defaults retry for four seconds, two apart: the tests are about what a refusal leaves.
    """
    from tasks import app

    quick = {**app.conf.broker_transport_options, "max_retries": 0, "interval_start": 0}
    monkeypatch.setitem(app.conf, "broker_transport_options", quick)
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server of this test's own, for what must not disturb the session's."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, redis.Redis]]:
    """A Redis server of the test's own and a client of it: what the server counts is the
    test's alone (see ``tests/redis_cost.py``). The broker is its database 1."""
    server = RedisServer(tmp_path / "own-redis")
    server.start()
    client = redis.Redis.from_url(server.url)
    yield server, client
    client.close()
    server.stop()


@pytest.fixture
def idle_broker(broker_under_test: Broker) -> Iterator[str]:
    """The URL of a broker no worker consumes from, emptied afterwards."""
    url = broker_under_test.url(7)
    yield url
    broker_under_test.empty(url)


@pytest.fixture
def bench_broker(broker_under_test: Broker) -> Iterator[str]:
    """The ``--broker`` a benchmark run is given: none on the Redis half (the run starts a
    Redis of its own), a vhost of the suite's node on the RabbitMQ half (emptied after)."""
    if broker_under_test.name == "redis":
        yield ""
        return
    url = broker_under_test.url(9)
    yield url
    broker_under_test.empty(url)


@pytest.fixture
def idle_redis_broker(redis_server: RedisServer) -> Iterator[tuple[str, redis.Redis]]:
    """(URL, client) of a Redis broker database no worker consumes, emptied afterwards: for
    the tests of kombu's Redis transport itself."""
    url = redis_server.url.rsplit("/", 1)[0] + "/7"
    connection = redis.Redis.from_url(url)
    yield url, connection
    connection.flushdb()
    connection.close()


#: Task events that end one sending of a task: its run ended, or it will be sent again.
ENDED = ("task-succeeded", "task-failed", "task-retried", "task-rejected", "task-revoked")


class TaskEvents:
    """The task events of the session's broker, as Flower receives them: what was sent (by
    any core: ``task_send_sent_event``) and what the workers' runs came to."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: task id -> times sent, times its runs ended, its arguments and the keywords it
        #: was last sent with (repr)
        self.sent: dict[str, int] = {}
        self.ended_runs: dict[str, int] = {}
        self.args: dict[str, str] = {}
        self.kwargs: dict[str, str] = {}
        self.probes: set[str] = set()
        self.receiver: Any = None
        self.thread: threading.Thread | None = None

    def _on_event(self, event: dict[str, Any]) -> None:
        kind, task = str(event.get("type", "")), str(event.get("uuid", ""))
        with self.lock:
            if kind == "test-probe":
                self.probes.add(str(event.get("probe")))
            elif kind == "task-sent":
                self.sent[task] = self.sent.get(task, 0) + 1
                self.args[task] = str(event.get("args", ""))
                self.kwargs[task] = str(event.get("kwargs", ""))
            elif kind in ENDED:
                self.ended_runs[task] = self.ended_runs.get(task, 0) + 1

    def _run(self, connection: Any) -> None:
        with connection, contextlib.suppress(Exception):  # the broker stops at the end
            self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def start(self) -> None:
        """Listen, and return once events reach this listener."""
        from tasks import app

        probe = uuid.uuid4().hex

        def heard() -> bool:
            with app.events.default_dispatcher() as dispatcher:
                dispatcher.send("test-probe", probe=probe)
            return probe in self.probes

        # Celery and kombu import their event classes and transports when first used. This
        # thread uses them before the listener's thread starts: two threads importing the
        # same modules at once can end in the import system's _DeadlockError.
        heard()
        connection = app.connection_for_read()
        self.receiver = app.events.Receiver(connection, handlers={"*": self._on_event})
        self.thread = threading.Thread(
            target=self._run, args=(connection,), name="task-events", daemon=True
        )
        self.thread.start()
        wait_for(heard, interval=0.1)

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.should_stop = True

    def ended(self, *tasks: str) -> bool:
        """Each of these tasks has run to an end."""
        with self.lock:
            return all(self.ended_runs.get(task, 0) > 0 for task in tasks)

    def settled(self, event_id: str) -> bool:
        """Every task sent for this event (its id among the arguments) has run to an end
        as often as it was sent: nothing of it is in a lane, a worker's hands or a retry."""
        with self.lock:
            tasks = [task for task, args in self.args.items() if event_id in args]
            return bool(tasks) and all(self.ended_runs.get(t, 0) >= self.sent[t] for t in tasks)


@pytest.fixture(scope="session")
def task_events(worker: Any) -> Iterator[TaskEvents]:
    """The session's task events (see :class:`TaskEvents`)."""
    events = TaskEvents()
    events.start()
    yield events
    events.stop()
