"""The faults, and what each did: signed webhooks at a steady rate, a fault midway, then the count.

Every scenario posts its webhooks over real HTTP to the Procfile's web process
(gunicorn), and strikes once a third of them have left. It then waits, bounded,
until every delivery of every event answered 202 has settled (succeeded, skipped
or dead-lettered), recovery doing its part, and counts, from the store and from
the handlers' own record:

- answered 202, and how many of those the store does not have;
- ran once, ran twice (or more), never ran: finished handler runs per event;
- stuck: deliveries still queued, running or retrying at the end;
- dead-lettered;
- recovery: seconds from the end of the fault until every delivery of the
  events answered before it ended had settled.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.faults.stack import FaultStack, kill
from bench.http_load import payload
from bench.services import SOURCE, Process
from eda.core import Core
from eda.settings import load

#: Statuses in which a delivery is done.
SETTLED = frozenset({"succeeded", "skipped", "dead"})
#: Load-sending threads (keep-alive connections).
SENDERS = 8


@dataclass(frozen=True)
class Timing:
    """How long faults last and how long a run may take to settle."""

    #: Seconds a killed worker or relay stays down, and a stopped Redis.
    worker_down: float
    relay_down: float
    redis_down: float
    #: Seconds to wait, after the last webhook, for every delivery to settle.
    settle: float
    #: Seconds between looks at the deliveries' statuses.
    look: float


@dataclass
class Running:
    """The run's processes that faults kill and start again."""

    stack: FaultStack
    worker: Process
    relay: Process


@dataclass(frozen=True)
class Scenario:
    """One row of the table: a name, the event kind it posts, and the fault it strikes."""

    name: str
    kind: str
    strike: Callable[[Running, Timing], None]
    appendfsync: str = "everysec"
    #: Whether the fault can end a handler's run before its end is recorded (a duplicate
    #: of the kind the README's delivery guarantee names).
    may_duplicate: bool = False
    #: Whether the fault stops the run's own Redis broker (left out on another broker).
    stops_broker: bool = False
    #: Seconds from the end of the fault by which its deliveries must have settled, with
    #: the default settings (None: no bound); a later recovery fails the run.
    recovers_within: float | None = None


@dataclass
class Row:
    """What one scenario did."""

    name: str
    answered: int = 0
    #: Answers other than 202, by status (-1: no answer).
    refused: dict[int, int] = field(default_factory=dict)
    not_stored: int = 0
    once: int = 0
    twice: int = 0
    never: int = 0
    stuck: int = 0
    dead: int = 0
    recovery: float | None = None
    may_duplicate: bool = False
    recovers_within: float | None = None


def no_fault(running: Running, timing: Timing) -> None:
    """Nothing happens."""


def kill_worker(running: Running, timing: Timing) -> None:
    kill(running.worker)
    time.sleep(timing.worker_down)
    running.worker = running.stack.start_worker()


def kill_relay(running: Running, timing: Timing) -> None:
    kill(running.relay)
    time.sleep(timing.relay_down)
    running.relay = running.stack.start_relay()


def redis_shutdown(running: Running, timing: Timing) -> None:
    running.stack.restart_redis("shutdown", timing.redis_down)


def redis_kill(running: Running, timing: Timing) -> None:
    running.stack.restart_redis("kill", timing.redis_down)


def broker_down(running: Running, timing: Timing) -> None:
    running.stack.restart_redis("shutdown", timing.redis_down, broker_only=True)


#: Seconds after its restart by which every delivery a killed worker held must succeed.
WORKER_RECOVERY_BOUND = 60.0

SCENARIOS = [
    Scenario("none", "fault_work", no_fault),
    Scenario(
        "worker kill -9, restarted",
        "fault_work",
        kill_worker,
        may_duplicate=True,
        recovers_within=WORKER_RECOVERY_BOUND,
    ),
    Scenario("relay kill -9, restarted", "fault_work", kill_relay),
    Scenario(
        "Redis shutdown (AOF everysec)",
        "fault_work",
        redis_shutdown,
        may_duplicate=True,
        stops_broker=True,
    ),
    Scenario(
        "Redis kill -9 (AOF everysec)",
        "fault_work",
        redis_kill,
        may_duplicate=True,
        stops_broker=True,
    ),
    Scenario("Redis kill -9 (AOF always)", "fault_work", redis_kill, "always", True, True),
    Scenario("broker unreachable at ingest", "fault_work", broker_down, stops_broker=True),
    Scenario("handler fails transiently (30%)", "fault_flaky", no_fault),
]


class Sender:
    """Signed Standard Webhooks posted at ``rate`` per second from a few threads."""

    def __init__(self, port: int, secret: str, kind: str, count: int, rate: float) -> None:
        self.port, self.key = port, base64.b64decode(secret.removeprefix("whsec_"))
        self.body = payload(kind, 256)
        self.count, self.rate = count, rate
        #: (status, event id, wall time of the answer), by request index.
        self.answers: list[tuple[int, str, float]] = [(0, "", 0.0)] * count
        self.threads = [threading.Thread(target=self._send, args=(n,)) for n in range(SENDERS)]

    def start(self) -> None:
        self.began = time.monotonic()
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join()

    def sent(self) -> int:
        return sum(1 for status, _, _ in self.answers if status)

    def _headers(self) -> dict[str, str]:
        message_id = "msg_" + os.urandom(12).hex()
        stamp = str(int(time.time()))
        signed = f"{message_id}.{stamp}.".encode() + self.body
        signature = hmac.new(self.key, signed, hashlib.sha256).digest()
        return {
            "Content-Type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": stamp,
            "webhook-signature": "v1," + base64.b64encode(signature).decode(),
        }

    def _send(self, offset: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        for index in range(offset, self.count, SENDERS):
            delay = self.began + index / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                connection.request("POST", f"/webhooks/{SOURCE}", self.body, self._headers())
                response = connection.getresponse()
                answer = json.loads(response.read() or b"{}")
                event_id = str(answer.get("event_id", "")) if isinstance(answer, dict) else ""
                self.answers[index] = (response.status, event_id, time.time())
            except (OSError, http.client.HTTPException, ValueError):
                self.answers[index] = (-1, "", time.time())
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        connection.close()


def statuses(core: Core, event_ids: list[str]) -> dict[str, str] | None:
    """Each event's worst delivery status ("missing" when not stored); None if unreachable."""
    found: dict[str, str] = {}
    try:
        for start in range(0, len(event_ids), 500):
            chunk = event_ids[start : start + 500]
            stored = {s.event.id: s for s in core.store.get_many(chunk)}
            for event_id in chunk:
                record = stored.get(event_id)
                if record is None:
                    found[event_id] = "missing"
                    continue
                states = [str(d.get("status")) for d in record.deliveries.values()] or ["none"]
                unsettled = [s for s in states if s not in SETTLED]
                found[event_id] = unsettled[0] if unsettled else max(states, key=states.count)
    except Exception:  # the store is down for the fault: look again later
        return None
    return found


def settled(found: dict[str, str] | None, event_ids: list[str]) -> bool:
    return found is not None and all(found[e] in SETTLED for e in event_ids)


def run(
    running: Running, port: int, scenario: Scenario, count: int, rate: float, timing: Timing
) -> Row:
    """Post ``count`` webhooks, strike once a third have left, and count what happened."""
    stack = running.stack
    stack.sync(scenario.appendfsync)
    core = Core(load(stack.env))
    sender = Sender(port, stack.secret, scenario.kind, count, rate)
    sender.start()
    deadline = time.monotonic() + count / rate + timing.settle
    while sender.sent() < count // 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    scenario.strike(running, timing)
    fault_ended = time.monotonic()
    before = [event_id for status, event_id, _ in sender.answers if status == 202]
    recovery = None
    while time.monotonic() < deadline and recovery is None:
        if settled(statuses(core, before), before):
            recovery = time.monotonic() - fault_ended
        else:
            time.sleep(timing.look)
    sender.join()
    accepted = [event_id for status, event_id, _ in sender.answers if status == 202]
    found = statuses(core, accepted)
    while not settled(found, accepted) and time.monotonic() < deadline:
        time.sleep(timing.look)
        found = statuses(core, accepted)
    row = count_row(scenario, stack, sender, accepted, found or {})
    row.recovery = recovery
    return row


def count_row(
    scenario: Scenario,
    stack: FaultStack,
    sender: Sender,
    accepted: list[str],
    found: dict[str, str],
) -> Row:
    runs = stack.runs()
    row = Row(
        scenario.name,
        answered=len(accepted),
        may_duplicate=scenario.may_duplicate,
        recovers_within=scenario.recovers_within,
    )
    row.refused = dict(Counter(status for status, _, _ in sender.answers if status != 202))
    for event_id in accepted:
        ran = runs.get(event_id, 0)
        status = found.get(event_id, "missing")
        row.not_stored += status == "missing"
        row.stuck += status not in SETTLED and status != "missing"
        row.dead += status == "dead"
        row.once += ran == 1
        row.twice += ran >= 2
        row.never += ran == 0 and status != "dead"
    return row
