"""agents.backend.shared_client: one Messages API client per thread and endpoint."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from typing import Any

import pytest

from agents.backend import open_backend, shared_client
from tests.workers import ROOT


def test_deliveries_share_one_client_per_endpoint_and_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/one")
    with open_backend() as first, open_backend() as second:
        assert first.client is second.client  # type: ignore[attr-defined]
    assert shared_client() is first.client  # type: ignore[attr-defined]

    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/two")
    other = shared_client()

    assert other is not first.client  # type: ignore[attr-defined]
    assert str(other.base_url).startswith("http://127.0.0.1:9/two")


def test_each_thread_has_its_own_client_and_keeps_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/threads")
    seen: list[tuple[Any, Any]] = []

    def deliveries() -> None:
        with open_backend() as first, open_backend() as second:
            seen.append((first.client, second.client))  # type: ignore[attr-defined]

    threads = [threading.Thread(target=deliveries) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    (one, again), (other, _) = seen
    # a thread's deliveries share its client (and its connection pool), another thread's
    # have their own: the pool's lock and its walks over its connections are not shared
    assert one is again and one is not other and other is not shared_client()


def _printed(code: str) -> str:
    """What ``code`` prints, run by a Python of its own with credentials set."""
    env = {
        **os.environ,
        "ANTHROPIC_API_KEY": "sk-ant-test-key",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9/subprocess",
    }
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_greenlets_share_the_process_client() -> None:
    # A gevent pool starts a greenlet a delivery: a client a greenlet would be a TLS
    # context and a connection a delivery.
    code = (
        "from gevent import monkey; monkey.patch_all()\n"
        "import gevent\n"
        "from agents.backend import shared_client\n"
        "calls = [gevent.spawn(shared_client) for _ in range(3)]\n"
        "gevent.joinall(calls)\n"
        "print(len({id(call.value) for call in calls}))\n"
    )
    assert _printed(code) == "1"


def test_a_worker_of_64_threads_holds_its_clients_in_a_few_mib() -> None:
    # Each client loading the CA bundle into a TLS context of its own cost 20 MiB more.
    code = (
        "import threading\n"
        "from agents.backend import shared_client\n"
        "def rss():\n"
        "    return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20\n"
        "shared_client()\n"  # the first: the SDK's modules and the process's context
        "before = rss()\n"
        "threads = [threading.Thread(target=shared_client) for _ in range(63)]\n"
        "for thread in threads: thread.start()\n"
        "for thread in threads: thread.join()\n"
        "print(rss() - before)\n"
    )
    assert float(_printed(code)) < 5  # MiB for 63 more clients (20 with a context each)
