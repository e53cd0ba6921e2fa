"""The event store behind Redis Sentinel: ``redis+sentinel://`` URLs, and a failover.

A primary, its replica and a sentinel run here (the bundled redis-server, loopback);
a real web takes signed webhooks over HTTP while the primary is stopped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kombu
import pytest
import redis

from eda.core import Core
from eda.errors import InvalidInput
from eda.redis_server import (
    SentinelTarget,
    connect,
    free_port,
    redis_binary,
    redis_url,
    sentinel_target,
    shown_url,
    start_server,
    wait_until_ready,
)
from eda.settings import Settings
from tests.conftest import RedisServer, end, wait_for
from tests.http_support import STANDARD_SECRET, http, serve, standard_headers, with_secrets
from webhooks import create_app

SERVICE = "events-primary"


# --- the URL -------------------------------------------------------------------------


def test_a_sentinel_url_names_its_sentinels_service_database_and_password() -> None:
    target = sentinel_target("redis+sentinel://:s%40cret@10.0.0.1:26379,[::1]:26380,h3/main/2")
    assert target == SentinelTarget(
        sentinels=(("10.0.0.1", 26379), ("::1", 26380), ("h3", 26379)),
        service="main",
        db=2,
        password="s@cret",
    )
    assert sentinel_target("redis+sentinel://app:pw@h:1/main") == SentinelTarget(
        (("h", 1),), "main", 0, "app", "pw"
    )


def test_other_urls_are_not_sentinel_urls() -> None:
    assert sentinel_target("redis://127.0.0.1:6379/0") is None
    assert sentinel_target("rediss://:pw@host:6380/1") is None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+sentinel://:hunter2@h:26379", "names no service"),
        ("redis+sentinel://:hunter2@h:26379/", "names no service"),
        ("redis+sentinel://:hunter2@h:26379/main/zero", "database 'zero' is not a number"),
        ("redis+sentinel://:hunter2@h:26379/main/0/extra", "names no service"),
        ("redis+sentinel://:hunter2@h:port/main", "sentinel 'h:port' has no valid port"),
        ("redis+sentinel://:hunter2@h:70000/main", "has no valid port"),
        ("redis+sentinel://:hunter2@h:1,,h:2/main", "names an empty sentinel host"),
        ("redis+sentinel://:hunter2@:26379/main", "names no host"),
        ("redis+sentinel://:hunter2@h:1/main?ssl=true", "takes no query parameters"),
    ],
)
def test_a_malformed_sentinel_url_is_refused_naming_redis_url_not_its_password(
    make_settings: Callable[..., Settings], url: str, why: str
) -> None:
    settings = make_settings(redis_url=url)
    for reach in (redis_url, connect):
        with pytest.raises(InvalidInput) as caught:
            reach(settings)
        assert caught.value.field == "REDIS_URL"
        assert why in caught.value.reason
        assert "redis+sentinel://" in caught.value.reason  # the form it should take
        assert "hunter2" not in str(caught.value)


def test_the_broker_url_is_kombus_sentinel_form_of_the_same_primary() -> None:
    target = sentinel_target("redis+sentinel://:p%3Bw@127.0.0.1:26379,[::1]:26380/main/3")
    assert target is not None
    assert target.broker_url() == (
        "sentinel://:p%3Bw@127.0.0.1:26379/3;sentinel://:p%3Bw@[::1]:26380/3"
    )


def test_celery_takes_the_store_behind_sentinel_as_its_broker_through_kombus_transport() -> None:
    program = (
        "import json, celeryconfig as c; "
        "print(json.dumps([c.broker_url, c.broker_transport_options['master_name']]))"
    )
    environment = {k: v for k, v in os.environ.items() if k != "CELERY_BROKER_URL"}
    environment["REDIS_URL"] = "redis+sentinel://:pw@127.0.0.1:26379,127.0.0.1:26380/main/1"
    out = subprocess.run(
        [sys.executable, "-c", program],
        cwd=Path(__file__).resolve().parent.parent,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout) == [
        "sentinel://:pw@127.0.0.1:26379/1;sentinel://:pw@127.0.0.1:26380/1",
        "main",
    ]


# --- a primary, a replica, a sentinel --------------------------------------------------


@dataclass
class Replicated:
    """A primary and its replica, watched by one sentinel (quorum 1, quick to fail over)."""

    primary: RedisServer
    replica: RedisServer
    sentinel_port: int
    sentinel: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{SERVICE}/0"

    def primary_is_up(self) -> bool:
        """The sentinel holds the primary up (clients are given its address)."""
        client = redis.Redis(port=self.sentinel_port, socket_timeout=2, decode_responses=True)
        try:
            state = client.sentinel_master(SERVICE)
            return bool(state["is_master"] and not state["is_sdown"] and not state["is_odown"])
        finally:
            client.close()

    def primary_address(self) -> tuple[str, int] | None:
        client = redis.Redis(port=self.sentinel_port, socket_timeout=2, decode_responses=True)
        try:
            found = client.sentinel_get_master_addr_by_name(SERVICE)
            return None if found is None else (str(found[0]), int(found[1]))
        finally:
            client.close()


def _sentinel_config(folder: Path, port: int, primary_port: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sentinel.conf"  # the sentinel rewrites it as it learns: its own file
    path.write_text(
        "\n".join(
            [
                "bind 127.0.0.1",
                f"port {port}",
                f"dir {folder}",
                f"logfile {folder / 'sentinel.log'}",
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 1",
                # Short, yet long enough that a busy machine's slow answer is no outage.
                f"sentinel down-after-milliseconds {SERVICE} 1500",
                f"sentinel failover-timeout {SERVICE} 3000",
                f"sentinel parallel-syncs {SERVICE} 1",
            ]
        )
        + "\n"
    )
    return path


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[Replicated]:
    primary = RedisServer(tmp_path / "primary")
    primary.start()
    replica = RedisServer(tmp_path / "replica")
    replica.process = start_server(
        replica.folder, replica.port, options=("--replicaof", "127.0.0.1", str(primary.port))
    )
    wait_until_ready(replica.url)
    port = free_port()
    config = _sentinel_config(tmp_path / "sentinel", port, primary.port)
    sentinel = subprocess.Popen(
        [redis_binary(), str(config), "--sentinel"], stdin=subprocess.DEVNULL
    )
    setup = Replicated(primary, replica, port, sentinel)
    try:
        watcher = redis.Redis(port=replica.port, decode_responses=True)
        wait_for(lambda: watcher.info("replication").get("master_link_status") == "up")
        # The replica rewrites its append-only file after the sync and refuses a SIGTERM
        # until it is written ("Writing initial AOF, can't exit"): the stop would wait out
        # its grace and kill it.
        wait_for(lambda: not _rewriting(watcher))
        watcher.close()
        # The sentinel has found the replica it would promote.
        sentinels = redis.Redis(port=port, decode_responses=True)
        wait_for(lambda: _answers(sentinels) and sentinels.sentinel_slaves(SERVICE), timeout=20)
        sentinels.close()
        yield setup
    finally:
        end(sentinel)
        replica.stop()
        primary.stop()


def _rewriting(client: redis.Redis) -> bool:
    persistence = client.info("persistence")
    return bool(persistence["aof_rewrite_in_progress"] or persistence["aof_rewrite_scheduled"])


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_the_store_and_the_broker_reach_the_primary_through_the_sentinel(
    replicated: Replicated, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(redis_url=replicated.url)
    store = connect(settings)
    store.set(f"{settings.prefix}:probe", "written")
    primary = redis.Redis(port=replicated.primary.port, decode_responses=True)
    assert primary.get(f"{settings.prefix}:probe") == "written"
    primary.close()
    store.close()

    target = sentinel_target(replicated.url)
    assert target is not None
    with kombu.Connection(
        target.broker_url(), transport_options={"master_name": target.service}
    ) as connection:
        queue = connection.SimpleQueue(f"{settings.prefix}-sentinel")
        queue.put({"through": "sentinel"})
        message = queue.get(timeout=10)
        assert message.payload == {"through": "sentinel"}
        message.ack()
        queue.close()


# --- the failover ----------------------------------------------------------------------


class Poster:
    """Posts signed webhooks to the web one after another and records every answer."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.answers: list[tuple[int, str | None]] = []  # (status, event id when 202)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stopping.is_set():
            message_id = f"msg_{uuid.uuid4().hex}"
            body = json.dumps({"type": "incident.triggered", "data": {"id": message_id}}).encode()
            status, _, answer = http(
                "POST",
                f"{self.base}/webhooks/pagerduty",
                body,
                standard_headers(body, message_id=message_id),
            )
            event_id = answer.get("event_id") if isinstance(answer, dict) else None
            self.answers.append((status, event_id))
            time.sleep(0.01)

    def statuses(self) -> list[int]:
        return [status for status, _ in list(self.answers)]

    def accepted_after_refusal(self) -> int:
        """How many 202s came after the last 503 (0 while none has come yet)."""
        statuses = self.statuses()
        if 503 not in statuses:
            return 0
        last = len(statuses) - 1 - statuses[::-1].index(503)
        return statuses[last:].count(202)


def test_the_web_answers_503_during_a_failover_and_loses_nothing_it_answered_202(
    replicated: Replicated, make_settings: Callable[..., Settings]
) -> None:
    settings = with_secrets(
        make_settings(redis_url=replicated.url), EDA_WEBHOOK_SECRET_PAGERDUTY=STANDARD_SECRET
    )
    core = Core(settings, defer_dispatch=True)
    with serve(create_app(core, settings)) as base:
        poster = Poster(base)
        poster.thread.start()
        try:
            wait_for(lambda: poster.statuses().count(202) >= 20)
            replicated.primary.stop()
            wait_for(lambda: 503 in poster.statuses(), timeout=10)
            wait_for(lambda: poster.accepted_after_refusal() >= 20, timeout=30)
        finally:
            poster.stopping.set()
            poster.thread.join(timeout=30)

    answers = list(poster.answers)
    statuses = [status for status, _ in answers]
    assert set(statuses) == {202, 503}, statuses
    first, last = statuses.index(503), len(statuses) - 1 - statuses[::-1].index(503)
    assert statuses[:first] == [202] * first  # before the primary stopped
    assert statuses[last + 1 :] == [202] * (len(statuses) - last - 1)  # after the failover
    # The sentinel made the replica the primary, and the store is read through it.
    assert replicated.primary_address() == ("127.0.0.1", replicated.replica.port)
    wait_for(replicated.primary_is_up)
    reader = Core(settings)
    accepted = [event_id for status, event_id in answers if status == 202]
    assert all(accepted)
    missing = [event_id for event_id in accepted if not _stored(reader, str(event_id))]
    assert missing == [], f"{len(missing)} of {len(accepted)} accepted events are not stored"


def _stored(core: Core, event_id: str) -> Any:
    return core.get_event(event_id).event.payload


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis+sentinel://:hunter2@h:1,h:2/main/0", "redis+sentinel://:**@h:1,h:2/main/0"),
        ("redis+sentinel://app:hunter2@h:1/main", "redis+sentinel://app:**@h:1/main"),
        ("redis://:hunter2@127.0.0.1:6379/0", "redis://:**@127.0.0.1:6379/0"),
        ("redis+sentinel://h:1/main", "redis+sentinel://h:1/main"),
    ],
)
def test_a_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert shown_url(url) == shown
