"""The HTTP load generator: signed webhook POSTs over keep-alive connections.

Light enough not to be the bottleneck: requests are bytes built by hand and
responses parsed by hand, many connections per process multiplexed with
``selectors``, and several processes (``multiprocessing``, spawned: this module
imports nothing of the project). Two modes:

- closed loop (:func:`closed_loop`): each connection sends its next request as
  soon as the last answer arrives, for a fixed time; gives requests/s and latency;
- open loop (:func:`open_loop`): requests leave at a fixed rate whatever the
  answers; gives, for each request, when its answer arrived and the event id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import multiprocessing
import os
import re
import resource
import selectors
import socket
import time
from collections import Counter, deque
from dataclasses import dataclass, field

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:\s*close", re.IGNORECASE)


@dataclass(frozen=True)
class Target:
    """Where to post and what: ``{"type": kind, ...}`` padded to ``payload_bytes`` of JSON."""

    port: int
    source: str
    secret: str
    kind: str
    payload_bytes: int = 1024


@dataclass
class Answers:
    """What one load process saw."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    #: (event id from the answer, wall time the request left, wall time the answer arrived)
    events: list[tuple[str, float, float]] = field(default_factory=list)
    cpu_seconds: float = 0.0
    #: Every answer, those of the warm-up and of the last requests in flight too.
    answered: int = 0
    #: Largest delay of a send behind its schedule (open loop), in seconds.
    behind: float = 0.0


def payload(kind: str, size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes (when ``size`` allows) with ``type`` = kind."""
    head = json.dumps({"type": kind, "pad": ""}, separators=(",", ":")).encode()
    return head[:-2] + b"x" * max(0, size - len(head)) + b'"}'


def signed(target: Target, body: bytes) -> bytes:
    """One Standard Webhooks request with a fresh ``webhook-id``, as raw HTTP/1.1."""
    message_id = "msg_" + os.urandom(12).hex()
    stamp = str(int(time.time()))
    key = base64.b64decode(target.secret.removeprefix("whsec_"))
    signature = hmac.new(key, f"{message_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    head = (
        f"POST /webhooks/{target.source} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"webhook-id: {message_id}\r\nwebhook-timestamp: {stamp}\r\n"
        f"webhook-signature: v1,{base64.b64encode(signature).decode()}\r\n\r\n"
    )
    return head.encode() + body


class Connection:
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = self._connect()
        self.buffer = b""
        self.sent_at = 0.0
        self.sent_wall = 0.0
        #: The server said it closes the connection after its answer.
        self.closing = False

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def send(self, request: bytes) -> None:
        self.sent_at, self.sent_wall = time.perf_counter(), time.time()
        self.sock.sendall(request)

    def reconnect(self, selector: selectors.BaseSelector) -> None:
        """A fresh connection after the server closed this one (a server without keep-alive)."""
        selector.unregister(self.sock)
        self.sock.close()
        self.sock = self._connect()
        self.buffer = b""
        self.closing = False
        selector.register(self.sock, selectors.EVENT_READ, self)

    def receive(self) -> tuple[int, bytes] | None:
        """(status, body) once a whole answer is in; None while it is not. Readable only.

        ConnectionError when the server closed the connection before answering.
        """
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        found = _CONTENT_LENGTH.search(self.buffer, 0, end + 2)
        length = int(found.group(1)) if found else 0
        if len(self.buffer) < end + 4 + length:
            return None
        status = int(self.buffer[9:12])
        self.closing = _CLOSE.search(self.buffer, 0, end + 2) is not None
        body = self.buffer[end + 4 : end + 4 + length]
        self.buffer = self.buffer[end + 4 + length :]
        return status, body


def closed_loop(
    target: Target, connections: int, warmup: float, seconds: float, start_at: float
) -> Answers:
    """Keep ``connections`` requests in flight; answers counted after ``warmup`` only."""
    body = payload(target.kind, target.payload_bytes)
    selector = selectors.DefaultSelector()
    pool = [Connection(target.port) for _ in range(connections)]
    answers = Answers()
    time.sleep(max(0.0, start_at - time.time()))
    begin = resource.getrusage(resource.RUSAGE_SELF)
    measure_from = time.perf_counter() + warmup
    end = measure_from + seconds
    for connection in pool:
        selector.register(connection.sock, selectors.EVENT_READ, connection)
        connection.send(signed(target, body))
    in_flight = len(pool)
    while in_flight:
        for key, _ in selector.select(timeout=1.0):
            connection = key.data
            answer = _receive(connection, selector)
            if answer is None:
                continue
            now = time.perf_counter()
            answers.answered += 1
            if connection.sent_at >= measure_from and now <= end:
                answers.latencies.append(now - connection.sent_at)
                answers.statuses[answer[0]] += 1
            if now < end:
                _send(connection, selector, signed(target, body))
            else:
                in_flight -= 1
    answers.cpu_seconds = _cpu(begin)
    return answers


def open_loop(target: Target, rate: float, count: int, connections: int) -> Answers:
    """Send ``count`` requests at ``rate`` per second, each on a free connection."""
    body = payload(target.kind, target.payload_bytes)
    selector = selectors.DefaultSelector()
    idle = deque(Connection(target.port) for _ in range(connections))
    for connection in idle:
        selector.register(connection.sock, selectors.EVENT_READ, connection)
    answers = Answers()
    begin = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    sent = received = 0
    while received < count:
        now = time.perf_counter()
        while sent < count and start + sent / rate <= now:
            if not idle:  # every connection is busy: open one more rather than fall behind
                extra = Connection(target.port)
                selector.register(extra.sock, selectors.EVENT_READ, extra)
                idle.append(extra)
            answers.behind = max(answers.behind, now - (start + sent / rate))
            _send(idle.popleft(), selector, signed(target, body))
            sent += 1
        wait = max(0.0, start + sent / rate - now) if sent < count else 1.0
        for key, _ in selector.select(timeout=wait):
            connection = key.data
            answer = _receive(connection, selector)
            if answer is None:
                continue
            received += 1
            answers.statuses[answer[0]] += 1
            event_id = str(json.loads(answer[1]).get("event_id", ""))
            answers.events.append((event_id, connection.sent_wall, time.time()))
            answers.latencies.append(time.perf_counter() - connection.sent_at)
            idle.append(connection)
    answers.cpu_seconds = _cpu(begin)
    return answers


def _send(connection: Connection, selector: selectors.BaseSelector, request: bytes) -> None:
    """Send on the connection, first renewing it when the server said it would close it."""
    if connection.closing:
        connection.reconnect(selector)
    connection.send(request)


def _receive(connection: Connection, selector: selectors.BaseSelector) -> tuple[int, bytes] | None:
    """An answer, or None; a connection closed before its answer counts as status 0, renewed."""
    try:
        return connection.receive()
    except ConnectionError:
        connection.reconnect(selector)
        return (0, b"{}")


def _cpu(begin: resource.struct_rusage) -> float:
    end = resource.getrusage(resource.RUSAGE_SELF)
    return (end.ru_utime - begin.ru_utime) + (end.ru_stime - begin.ru_stime)


#: Seconds from handing a closed loop to warm load processes to its start: each process
#: has connected and waits by then (a fresh, spawned process needs about a second more).
START_MARGIN = 0.2


class LoadProcesses:
    """``processes`` spawned load processes, kept for every closed loop of a scenario
    (each imports the load generator once, not once a load). They start on entering,
    while the caller starts what they will load, and are waited for on the first loop."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._pool = multiprocessing.get_context("spawn").Pool(processes)
        self._started = False

    def __enter__(self) -> LoadProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.close()
        self._pool.join()

    def closed_loop(
        self, target: Target, connections: int, warmup: float, seconds: float
    ) -> Answers:
        """:func:`closed_loop` in every process at once, their answers merged."""
        if not self._started:
            self._pool.map(time.sleep, [0.0] * self.processes)  # each started and imported
            self._started = True
        start_at = time.time() + START_MARGIN  # every process connected and waiting first
        arguments = [(target, connections, warmup, seconds, start_at)] * self.processes
        merged = Answers()
        for part in self._pool.starmap(closed_loop, arguments):
            merged.latencies += part.latencies
            merged.statuses.update(part.statuses)
            merged.cpu_seconds += part.cpu_seconds
            merged.answered += part.answered
        return merged


def run_open_loop(target: Target, rate: float, count: int, connections: int = 8) -> Answers:
    """:func:`open_loop` in a process of its own (away from the suite's other threads)."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(open_loop, (target, rate, count, connections))
