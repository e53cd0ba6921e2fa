"""The run command end to end: every Procfile process, the demo, Flower, and a clean Ctrl-C."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from eda.redis_server import free_port
from tests.conftest import RedisServer, wait_for
from tests.workers import ROOT

pytestmark = pytest.mark.timeout(180)


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``, read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def fetch(url: str, authorization: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": authorization})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
        return json.loads(response.read())


def test_up_runs_every_process_sends_the_demo_and_stops_cleanly_on_ctrl_c(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    web_port, flower_port = free_port(), free_port()
    token, flower_login = uuid.uuid4().hex, f"admin:{uuid.uuid4().hex}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")},
        "REDIS_URL": redis_server.url,
        "CELERY_BROKER_URL": redis_server.url.rsplit("/", 1)[0] + "/5",
        "EDA_PREFIX": f"up-{uuid.uuid4().hex[:8]}",
        "EDA_DATA_DIR": str(tmp_path / "data"),
        "EDA_ADMIN_TOKEN": token,
        "FLOWER_BASIC_AUTH": flower_login,
        "EDA_LOG_FORMAT": "json",
        "EDA_WORKER_CONCURRENCY": "8",
        # PATH as a fresh shell has it: the Procfile's commands must be found in .venv/bin anyway
        "PATH": "/usr/local/bin:/usr/bin:/bin",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scripts.up",
            "--web-port",
            str(web_port),
            "--flower-port",
            str(flower_port),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 150
        for line in process.stdout:
            output.append(line)
            if "Press Ctrl-C" in line or time.monotonic() > deadline:
                break
        text = "".join(output)
        assert "Press Ctrl-C to stop everything." in text, text[-3000:]
        assert "DRY RUN" in text

        web = f"http://127.0.0.1:{web_port}"
        events = fetch(f"{web}/api/events?limit=20", f"Bearer {token}")["events"]
        by_type: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            by_type.setdefault(event["type"], []).append(
                fetch(f"{web}/api/events/{event['id']}", f"Bearer {token}")
            )
        assert sorted((t, len(e)) for t, e in by_type.items()) == [
            ("alert.triggered", 2),
            ("code.pushed", 1),
            ("demo.failure", 1),
            ("payment.failed", 1),
        ]
        alerts = {e["payload"]["severity"]: e["deliveries"][0] for e in by_type["alert.triggered"]}
        assert alerts["critical"]["status"] == "succeeded"
        assert alerts["critical"]["outcome"]["backend"] == "dry_run"
        assert alerts["low"]["status"] == "skipped"
        assert by_type["code.pushed"][0]["deliveries"][0]["handler"] == "CodeReviewer"
        letters = fetch(f"{web}/api/dead-letters", f"Bearer {token}")["dead_letters"]
        assert [x["event_id"] for x in letters] == [by_type["demo.failure"][0]["id"]]

        login = "Basic " + base64.b64encode(flower_login.encode()).decode()
        tasks = fetch(f"http://127.0.0.1:{flower_port}/api/tasks", login)
        delivered = [t for t in tasks.values() if t["name"] == "eda.deliver"]
        failure_id = by_type["demo.failure"][0]["id"]
        (failure,) = [t for t in delivered if failure_id in t["args"]]
        assert failure["args"] == repr((failure_id, "tasks.builtin:fail_permanently"))
        # A dead letter is a failure to Flower (and so to whoever alerts on Celery failures).
        assert failure["state"] == "FAILURE"
        assert "eda.errors.PermanentError" in failure["exception"]
        assert "handled by a handler that always fails" in failure["exception"]
        assert len(delivered) >= 5
        # Flower started beside a worker that was not up yet, and still lists it.
        workers = fetch(f"http://127.0.0.1:{flower_port}/api/workers", login)
        assert workers, "".join(output)[-4000:]
    finally:
        family = descendants(process.pid)
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
            if process.stdout is not None:
                process.stdout.close()
        finally:
            for pid in descendants(process.pid) | family:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
    assert process.returncode in (0, 130)
    left = [pid for pid in family if alive(pid)]
    assert left == [], f"processes left behind: {left}"


def test_a_process_that_exits_is_started_again_with_a_back_off_until_told_to_stop(
    tmp_path: Path,
) -> None:
    runs = tmp_path / "runs"
    command = f"{sys.executable} -c \"open('{runs}', 'a').write('run\\\\n'); raise SystemExit(3)\""
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "scripts.restart", "crashy", "--", command],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: runs.exists() and runs.read_text().count("run") >= 2, timeout=10)
    finally:
        supervisor.send_signal(signal.SIGTERM)
        _, errors = supervisor.communicate(timeout=10)
    assert "crashy exited with 3; starting it again in 1 s" in errors
    assert "again in 2 s" in errors or runs.read_text().count("run") == 2
    assert supervisor.returncode is not None  # stopped means stopped, not started again
