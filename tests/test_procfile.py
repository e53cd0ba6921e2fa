"""The Procfile's processes as they ship: what each refuses, keeps and withstands."""

from __future__ import annotations

import base64
import http.client as http_client
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest
import redis

from bench.procfile import expand
from eda.core import Core
from eda.redis_server import free_port
from tests.conftest import RedisServer, end_group, wait_for
from tests.http_support import github_signature, http

ROOT = Path(__file__).resolve().parent.parent


def procfile_line(name: str, env: dict[str, str]) -> list[str]:
    """The Procfile's ``name`` line as arguments in ``env``, ``python`` being this interpreter."""
    for raw in (ROOT / "Procfile").read_text().splitlines():
        found, _, command = raw.partition(":")
        if found.strip() == name:
            words = expand(command.strip(), env)
            if words[0] in ("python", "python3"):
                words[0] = sys.executable
            elif words[0] in ("celery", "gunicorn"):
                words[:1] = [sys.executable, "-m", words[0]]
            return words
    raise AssertionError(f"the Procfile has no {name} line")


@contextmanager
def running(
    command: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` as a process of its own session, stopped (and reaped) at the end with every
    process it started: gunicorn's workers, or gunicorn itself under a shell."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            end_group(process, grace=15)


def test_running_leaves_nothing_the_command_started_behind(tmp_path: Path) -> None:
    # As the web line under a shell: dash forks gunicorn rather than exec it, so a SIGTERM to
    # the shell alone left gunicorn and its workers running.
    pid = tmp_path / "pid"
    script = f"sleep 300 & echo $! > {pid}.new && mv {pid}.new {pid}; wait"
    with running(["/bin/sh", "-c", script], dict(os.environ), tmp_path / "sh.log") as shell:
        started = int(wait_for(lambda: pid.exists() and pid.read_text(), timeout=10))
        assert shell.poll() is None
    assert not alive(started)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not reaped yet, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


# -- flower ------------------------------------------------------------------------------------


@pytest.mark.parametrize("login", [None, "", "admin", "admin:", ":secret"])
def test_flower_refuses_to_start_without_a_login(login: str | None) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FLOWER_BASIC_AUTH", None)
    if login is not None:
        env["FLOWER_BASIC_AUTH"] = login
    env["EDA_FLOWER_PORT"] = str(free_port())
    done = subprocess.run(
        procfile_line("flower", env),
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "FLOWER_BASIC_AUTH" in done.stderr


def _status(url: str, login: str | None = None, timeout: float = 5) -> int:
    request = urllib.request.Request(url)  # noqa: S310 (the loopback URL of our Flower)
    if login is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(login.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_flower_with_a_login_starts_and_asks_for_it(tmp_path: Path) -> None:
    port = free_port()
    login = "admin:a-flower-password-for-tests"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FLOWER_BASIC_AUTH": login}
    env["EDA_FLOWER_WORKER_WAIT"] = "0"  # no worker here: Flower starts at once
    command = procfile_line("flower", {**env, "EDA_FLOWER_PORT": str(port)})
    with running(command, env, tmp_path / "flower.log") as process:

        def answers() -> bool:
            assert process.poll() is None, (tmp_path / "flower.log").read_text()
            try:
                return _status(f"http://127.0.0.1:{port}/api/workers") > 0
            except OSError:
                return False

        wait_for(answers, timeout=40, interval=0.2)
        assert _status(f"http://127.0.0.1:{port}/api/workers") == 401
        assert _status(f"http://127.0.0.1:{port}/api/workers", "admin:wrong") == 401
        assert _status(f"http://127.0.0.1:{port}/api/workers", login) == 200


# -- beat --------------------------------------------------------------------------------------


def test_beat_keeps_no_pickle_of_its_schedule(tmp_path: Path, redis_server: RedisServer) -> None:
    broker = redis_server.url.rsplit("/", 1)[0] + "/9"
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    before = set(ROOT.iterdir())
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "EDA_DATA_DIR": str(data_dir),
        "CELERY_BROKER_URL": broker,
        "EDA_SWEEP_INTERVAL": "0.5",
        "EDA_LOG_LEVEL": "info",
    }
    log = tmp_path / "beat.log"
    try:
        with running(procfile_line("beat", env), env, log) as process:

            def sent(times: int) -> bool:
                assert process.poll() is None, log.read_text()
                return log.read_text().count("Sending due task sweep-outbox") >= times

            wait_for(lambda: sent(1), timeout=40, interval=0.1)
            # a second sweep sent: whatever beat writes, it has written by now
            wait_for(lambda: sent(2), timeout=10, interval=0.05)
    finally:
        redis.Redis.from_url(broker).flushdb()
    made = [p.name for p in set(ROOT.iterdir()) - before]
    kept = [p.name for p in data_dir.rglob("*")]
    assert not [name for name in made + kept if "celerybeat" in name], (made, kept)


def test_beat_logs_a_broker_outage_once_when_it_starts_and_once_when_it_ends(
    tmp_path: Path,
) -> None:
    broker = RedisServer(tmp_path / "broker")
    broker.start()
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "EDA_DATA_DIR": str(data_dir),
        "CELERY_BROKER_URL": broker.url,
        "EDA_SWEEP_INTERVAL": "0.1",
        "EDA_LOG_LEVEL": "info",
    }
    log = tmp_path / "beat.log"
    try:
        with running(procfile_line("beat", env), env, log) as process:

            def logged(text: str) -> bool:
                assert process.poll() is None, log.read_text()
                return text in log.read_text()

            wait_for(lambda: logged("Sending due task sweep-outbox"), timeout=40, interval=0.1)
            broker.stop()
            before = log.read_text().count("Sending due task")
            # Three sends into the outage (each gives up after the publish's own retries).
            wait_for(lambda: log.read_text().count("Sending due task") >= before + 3, timeout=40)
            broker.start()
            wait_for(lambda: logged("beat sends again"), timeout=40, interval=0.1)
    finally:
        broker.stop()
    text = log.read_text()
    assert text.count("beat cannot send sweep-outbox") == 1, text[-3000:]
    assert text.count("beat sends again") == 1, text[-3000:]
    assert "Traceback" not in text and "Message Error" not in text, text[-3000:]


# -- web ---------------------------------------------------------------------------------------


@contextmanager
def serving_web(env: dict[str, str], log: Path) -> Iterator[str]:
    """The Procfile's web line on ``EDA_WEB_PORT``, once it answers: its base URL."""
    url = f"http://127.0.0.1:{env['EDA_WEB_PORT']}"
    with running(procfile_line("web", env), env, log) as process:

        def up() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return http("GET", f"{url}/healthz")[0] == 200
            except OSError:
                return False

        wait_for(up, timeout=40, interval=0.1)
        yield url


#: Slow clients held open at once, each trickling one header line every half second.
SLOW_CLIENTS = 50
#: Most seconds the slow clients keep trickling (they stop once the test is done).
TRICKLE_SECONDS = 8.0
#: Longest a normal request may take while they do.
PROMPT = 2.0


def _trickle(
    port: int, connected: threading.Barrier, done: threading.Event, sent: list[int]
) -> None:
    """One slowloris client: a request's header lines, one every half second, never finished;
    each line's number goes in ``sent`` once it is sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /webhooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        connected.wait(timeout=30)
        for line in range(int(TRICKLE_SECONDS / 0.5)):  # bounded
            if done.wait(0.5):
                return
            try:
                sock.sendall(f"X-Slow-{line}: a\r\n".encode())
            except OSError:
                return  # the server closed it: fine, it keeps nothing for it
            sent.append(line)


def _sent_round(sent: list[int], line: int) -> bool:
    """True once some slow client has sent header line ``line`` (none needed below 0)."""
    return line < 0 or max(sent, default=-1) >= line


def test_web_keeps_answering_while_fifty_slow_clients_hold_connections(
    tmp_path: Path, core: Core, prefix: str
) -> None:
    port = free_port()
    secret = "procfile web test secret"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "EDA_PREFIX": prefix,
        "GITHUB_WEBHOOK_SECRET": secret,
        "EDA_WEB_PORT": str(port),
        "EDA_ROUTES": str(ROOT / "tests" / "routes.yaml"),
    }
    with serving_web(env, tmp_path / "web.log") as url:
        connected, done = threading.Barrier(SLOW_CLIENTS + 1), threading.Event()
        sent: list[int] = []
        slow = [
            threading.Thread(target=_trickle, args=(port, connected, done, sent))
            for _ in range(SLOW_CLIENTS)
        ]
        for thread in slow:
            thread.start()
        try:
            connected.wait(timeout=30)  # every slow client is connected and trickling
            timings = []
            for n in range(20):
                # Five requests a round of the clients' lines: they spread over four rounds.
                wait_for(partial(_sent_round, sent, n // 5 - 1), timeout=5)
                body = f'{{"ref": "refs/heads/slow-{n}"}}'.encode()
                headers = {
                    "X-GitHub-Event": "push",
                    "X-GitHub-Delivery": f"slow-{n}",
                    "X-Hub-Signature-256": github_signature(secret, body),
                    "Content-Type": "application/json",
                }
                started = time.monotonic()
                health = _status(f"{url}/healthz", timeout=PROMPT)
                stored = http("POST", f"{url}/webhooks/github", body, headers, timeout=PROMPT)[0]
                timings.append(time.monotonic() - started)
                assert (health, stored) == (200, 202), n
        finally:
            done.set()
            for thread in slow:
                thread.join(timeout=TRICKLE_SECONDS + 10)
    assert max(timings) < PROMPT
    assert len(core.history(limit=100)) == 20


#: The body limit of the chunked-body test.
LIMIT = 4096


def _post_chunked(url: str, body: bytes, headers: dict[str, str]) -> int:
    """POST ``body`` to GitHub's endpoint in chunks (no Content-Length); the status."""
    connection = http_client.HTTPConnection(url.removeprefix("http://"), timeout=30)
    try:
        chunks = (body[i : i + 1000] for i in range(0, len(body), 1000))
        connection.request(
            "POST", "/webhooks/github", body=chunks, headers=headers, encode_chunked=True
        )
        return connection.getresponse().status
    finally:
        connection.close()


def test_web_refuses_a_chunked_body_over_the_limit_with_413_and_stores_nothing(
    tmp_path: Path, core: Core, prefix: str
) -> None:
    secret = "procfile web test secret"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "EDA_PREFIX": prefix,
        "GITHUB_WEBHOOK_SECRET": secret,
        "EDA_WEB_PORT": str(free_port()),
        "EDA_WEBHOOK_MAX_BODY_BYTES": str(LIMIT),
        "EDA_ROUTES": str(ROOT / "tests" / "routes.yaml"),
    }

    def signed(body: bytes, delivery: str) -> dict[str, str]:
        return {
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": github_signature(secret, body),
            "Content-Type": "application/json",
        }

    small = b'{"ref": "refs/heads/main"}'
    big = b'{"ref": "refs/heads/main", "pad": "' + b"x" * LIMIT + b'"}'
    with serving_web(env, tmp_path / "web.log") as url:
        refused = _post_chunked(url, big, signed(big, "big"))
        stored_after_refusal = len(core.history())
        taken = _post_chunked(url, small, signed(small, "small"))  # chunked bodies do get in
    assert refused == 413
    assert stored_after_refusal == 0
    assert taken == 202
    assert [e.event.source for e in core.history()] == ["github"]


# -- the port ----------------------------------------------------------------------------------

#: The address platforms need web bound to.
EVERY_INTERFACE = "0.0.0.0"  # noqa: S104


@contextmanager
def web_in_a_shell(tmp_path: Path, prefix: str, url: str, **variables: str) -> Iterator[None]:
    """The Procfile's web line run as platforms run it, in a shell, until it answers at ``url``."""
    # Heroku, Dokku, honcho and foreman run each line with a shell and give web $PORT.
    line = next(
        raw.partition(":")[2]
        for raw in (ROOT / "Procfile").read_text().splitlines()
        if raw.startswith("web:")
    )
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {
        **os.environ,
        "PATH": path,
        "PYTHONPATH": str(ROOT),
        "EDA_PREFIX": prefix,
        "EDA_ROUTES": str(ROOT / "tests" / "routes.yaml"),
        **variables,
    }
    with running(["/bin/sh", "-c", line.strip()], env, tmp_path / "web.log") as process:

        def up() -> bool:
            assert process.poll() is None, (tmp_path / "web.log").read_text()
            try:
                return http("GET", f"{url}/healthz")[0] == 200
            except OSError:
                return False

        wait_for(up, timeout=40, interval=0.1)
        yield


#: A loopback address other than 127.0.0.1: a bind to it follows ``EDA_WEB_HOST``.
OTHER_LOOPBACK = "127.0.0.2"


@pytest.fixture(scope="module")
def platform_web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """The web line in a shell as a platform runs it, given ``PORT``, ``EDA_WEB_PORT`` and
    ``EDA_WEB_HOST`` (the other loopback), once it answers there on ``PORT``: that port
    and ``EDA_WEB_PORT``'s. One web serves the tests of both variables."""
    port, other = free_port(), free_port()
    with web_in_a_shell(
        tmp_path_factory.mktemp("platform-web"),
        f"test-{uuid.uuid4().hex[:12]}",
        f"http://{OTHER_LOOPBACK}:{port}",
        PORT=str(port),
        EDA_WEB_PORT=str(other),
        EDA_WEB_HOST=OTHER_LOOPBACK,
    ):
        yield port, other


def test_web_listens_on_port_as_platforms_hand_it_over_before_eda_web_port(
    platform_web: tuple[int, int],
) -> None:
    _, other = platform_web  # it answers on PORT (the fixture waited for that)
    with pytest.raises(OSError):
        http("GET", f"http://{OTHER_LOOPBACK}:{other}/healthz", timeout=2)


def test_web_binds_eda_web_host_which_platforms_set_to_every_interface(
    platform_web: tuple[int, int],
) -> None:
    # A platform's router reaches the container at its own address, never at its loopback.
    line = procfile_line("web", {"EDA_WEB_HOST": EVERY_INTERFACE, "PORT": "5000"})
    assert f"{EVERY_INTERFACE}:5000" in line
    port, _ = platform_web
    # 127.0.0.2 is loopback too, but not 127.0.0.1: the bind follows the variable.
    with pytest.raises(OSError):
        http("GET", f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_flower_binds_loopback_unless_eda_flower_host_says_otherwise() -> None:
    assert "--address=127.0.0.1" in procfile_line("flower", {})
    line = procfile_line("flower", {"EDA_FLOWER_HOST": EVERY_INTERFACE, "EDA_FLOWER_PORT": "5600"})
    assert f"--address={EVERY_INTERFACE}" in line and "--port=5600" in line


def test_the_web_line_falls_back_to_eda_web_port_then_8000() -> None:
    assert "127.0.0.1:8123" in procfile_line("web", {"EDA_WEB_PORT": "8123"})
    assert "127.0.0.1:8000" in procfile_line("web", {})
    assert "127.0.0.1:9000" in procfile_line("web", {"PORT": "9000", "EDA_WEB_PORT": "8123"})
