"""The broker under test: the session's Redis (databases) or a RabbitMQ of the suite's own (vhosts).

``pytest --broker=rabbitmq`` (``python3 scripts/dev.py test-rabbitmq``) starts a
RabbitMQ node from the system's ``rabbitmq-server`` on free ports, with its own
node name, data folder and users, and stops it afterwards; ``TEST_AMQP_URL``
names a server to use instead. Either broker hands out numbered private brokers
(a Redis database, a RabbitMQ vhost) so that a test's messages are its own, and
answers how many messages wait in a lane.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

import redis
from kombu import Connection

from eda.redis_server import free_port, start_server, wait_until_ready
from tests.lanes import lane_length

#: Private brokers a test may ask for (Redis databases 1..15, RabbitMQ vhosts eda-1..eda-15).
SLOTS = range(1, 16)
#: The session's own broker, the one the shared workers consume.
SESSION_SLOT = 1
#: Where the system's RabbitMQ keeps its start script (the one on PATH may switch user).
RABBITMQ_SCRIPTS = (Path("/usr/lib/rabbitmq/bin/rabbitmq-server"),)
#: Seconds a RabbitMQ node may take to boot on a busy machine.
RABBITMQ_START_TIMEOUT = 90.0
#: What the suite says when RabbitMQ is wanted and not there.
NO_RABBITMQ = (
    "the RabbitMQ half needs rabbitmq-server (apt install rabbitmq-server) or TEST_AMQP_URL"
)


@contextlib.contextmanager
def own_redis(folder: Path) -> Iterator[str]:
    """A Redis server of its own, its data in ``folder``, for a module whose worker no other
    worker may share a broker with: its URL (no database); stopped on exit."""
    port = free_port()
    process = start_server(folder, port)
    url = f"redis://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{url}/0")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


class Broker(Protocol):
    name: str

    def url(self, slot: int) -> str: ...

    def waiting(self, url: str, lane: str = "default") -> int: ...

    def empty(self, url: str) -> None: ...


class RedisBroker:
    """Databases of the session's Redis as brokers."""

    name = "redis"

    def __init__(self, server_url: str) -> None:
        self.base = server_url.rsplit("/", 1)[0]

    def url(self, slot: int) -> str:
        return f"{self.base}/{slot}"

    def waiting(self, url: str, lane: str = "default") -> int:
        with redis.Redis.from_url(url) as client:
            return lane_length(client, lane)

    def empty(self, url: str) -> None:
        with redis.Redis.from_url(url) as client:
            client.flushdb()


def rabbitmq_script() -> str | None:
    """The system's rabbitmq-server start script, or None when RabbitMQ is not installed."""
    for script in RABBITMQ_SCRIPTS:
        if script.exists():
            return str(script)
    return shutil.which("rabbitmq-server")


def _password_hash(password: str) -> str:
    """A password as RabbitMQ's definitions keep it (salted SHA-256, base64)."""
    salt = secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


class RabbitBroker:
    """Vhosts of a RabbitMQ node as brokers: the suite's own node, or ``TEST_AMQP_URL``'s."""

    name = "rabbitmq"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.user, self.password = "eda", secrets.token_hex(8)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.base = f"amqp://{self.user}:{self.password}@127.0.0.1:{self.port}"
        self.vhost_prefix = "eda-"

    @classmethod
    def external(cls, url: str, folder: Path) -> RabbitBroker:
        """A server someone else runs: its vhost's name plus ``-N`` are the private brokers
        (they must exist)."""
        broker = cls(folder)
        base, _, vhost = url.rpartition("/")
        broker.base, broker.vhost_prefix = base, (vhost or "eda") + "-"
        return broker

    def url(self, slot: int) -> str:
        return f"{self.base}/{quote(self.vhost_prefix + str(slot), safe='')}"

    def start(self) -> None:
        script = rabbitmq_script()
        if script is None:
            raise RuntimeError(NO_RABBITMQ)
        definitions = self.folder / "definitions.json"
        definitions.write_text(json.dumps(self._definitions()))
        config = self.folder / "rabbitmq.conf"
        config.write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            f"load_definitions = {definitions}\n"
            "log.console = false\nlog.file.level = warning\n"
        )
        (self.folder / "enabled_plugins").write_text("[].\n")
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.folder),  # its own Erlang cookie
            "RABBITMQ_NODENAME": f"eda-test-{uuid.uuid4().hex[:8]}@localhost",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_CONFIG_FILE": str(config),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.folder / "rabbitmq.pid"),
        }
        self._log = open(self.folder / "server.log", "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [script],
            env=environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready()

    def _definitions(self) -> dict[str, object]:
        vhosts = [self.vhost_prefix + str(slot) for slot in SLOTS]
        return {
            "users": [
                {
                    "name": self.user,
                    "password_hash": _password_hash(self.password),
                    "hashing_algorithm": "rabbit_password_hashing_sha256",
                    "tags": "administrator",
                }
            ],
            "vhosts": [{"name": name} for name in vhosts],
            "permissions": [
                {"user": self.user, "vhost": name, "configure": ".*", "write": ".*", "read": ".*"}
                for name in vhosts
            ],
        }

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + RABBITMQ_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                break
            try:
                with Connection(self.url(SESSION_SLOT), connect_timeout=1) as connection:
                    connection.connect()
                    return
            except Exception:  # not listening yet, or still booting
                time.sleep(0.25)
        log = (self.folder / "server.log").read_text(errors="replace")[-3000:]
        self.stop()
        raise RuntimeError(f"rabbitmq-server did not start:\n{log}")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # the VM may outlive its start script
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None
        self._log.close()

    def waiting(self, url: str, lane: str = "default") -> int:
        with Connection(url) as connection:
            channel = connection.channel()
            try:
                _, count, _ = channel.queue_declare(queue=lane, passive=True)
            except Exception:  # a lane nobody declared holds nothing
                return 0
            return int(count)

    def empty(self, url: str) -> None:
        from tasks import app

        with Connection(url) as connection:
            for queue in app.conf.task_queues:
                channel = connection.channel()  # a refused purge closes its channel
                with contextlib.suppress(Exception):  # a lane never declared holds nothing
                    channel.queue_purge(queue=queue.name)
