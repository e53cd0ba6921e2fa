"""Prometheus metrics: what a process counts, and what a scrape reads from the store.

Where several processes count what one scrape serves (gunicorn's workers, a
Celery worker's prefork pool), counters and histograms use prometheus_client's
multiprocess mode: each process writes files of its own under a folder, and a
scrape sums them. prometheus_client picks its mode once, when it is imported,
from ``PROMETHEUS_MULTIPROC_DIR``: :func:`enable` sets it (from the settings'
``metrics_dir``) and has the library choose again. A process that alone counts
what it serves (a worker with the threads pool, the Procfile's) counts in its
memory instead (``enable(None)``): an increment is then an addition under a lock,
where the multiprocess mode also writes the value to its file, checking the
process id first (about 13 k instructions; a delivery counts four). A process
that never enables metrics (the CLI, scripts, the tests' in-process apps) counts
nothing and every ``count`` here is a no-op in it; the core imports this module,
never prometheus_client.

What is a state rather than a count (the relay's queue, the dead letters held, the
lanes' depth) is read from the store and the broker at scrape time by
:class:`StoreCollector`, so no process has to keep a gauge up to date.

Label values are bounded: source names, event types, handler, agent, model and
tool names, outcomes; never an event id.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eda.core import Core

log = logging.getLogger(__name__)

#: The environment variable prometheus_client reads its multiprocess folder from.
FOLDER_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

#: Seconds from an event's storing to its handler's first start.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_lock = threading.Lock()
_metrics: _Metrics | None = None
_folder: Path | None = None


class _Metrics:
    """The process's counters and histograms (built once prometheus_client is in its mode).

    Registered nowhere: a scrape reads the multiprocess files, or, counting in memory,
    this object (a collector of its metrics).
    """

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        def counter(name: str, documentation: str, labels: list[str]) -> Any:
            return Counter(name, documentation, labels, registry=None)

        self.webhooks = counter(
            "eda_webhooks_received", "Webhook requests answered", ["source", "code"]
        )
        self.events = counter("eda_events_stored", "Events stored (duplicates not)", ["type"])
        self.blocked = counter(
            "eda_events_blocked", "Events stored blocked by the chain guard", ["type"]
        )
        self.attempts = counter("eda_delivery_attempts", "Delivery attempts run", ["handler"])
        self.retries = counter("eda_delivery_retries", "Attempts that end in a retry", ["handler"])
        self.deliveries = counter(
            "eda_deliveries", "Deliveries ended, by final status", ["handler", "status"]
        )
        self.dead_letters = counter(
            "eda_dead_letters", "Dead letters added, retried and discarded", ["action"]
        )
        self.latency = Histogram(
            "eda_delivery_start_latency_seconds",
            "Seconds from an event's storing to its handler's first start",
            ["handler"],
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        #: Each counter's children by their labels (bounded, as every label value here is).
        self._children: dict[tuple[Any, ...], Any] = {}
        self.agent_runs = counter("eda_agent_runs", "Agent runs ended", ["agent", "outcome"])
        self.model_requests = counter(
            "eda_agent_model_requests", "Model calls of agent runs", ["agent", "model"]
        )
        self.tokens = counter(
            "eda_agent_tokens", "Tokens of agent runs' model calls", ["agent", "model", "kind"]
        )
        self.tool_calls = counter(
            "eda_agent_tool_calls", "Tool calls of agent runs", ["agent", "tool", "outcome"]
        )

    def collect(self) -> Iterator[Any]:
        """Every metric's samples, as counted in this process's memory."""
        for metric in vars(self).values():
            if hasattr(metric, "collect"):
                yield from metric.collect()

    def child(self, metric: Any, *labels: str | int) -> Any:
        """``metric.labels(*labels)``, looked up once: each webhook counts two of these,
        and prometheus_client checks and converts the labels at every call."""
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*(str(label) for label in labels))
        return found


def enable(folder: Path | None) -> None:
    """Count in this process: into ``folder`` (created; dead processes' files cleaned),
    for the processes that share it, or, with None, in this process's memory alone.

    Counting into a folder must come before anything imports prometheus_client in
    this process; a process forked after it (gunicorn's and Celery's workers)
    inherits it. Enabling again otherwise is refused: the library's mode is set for
    the process.
    """
    global _metrics, _folder
    with _lock:
        if _metrics is not None:
            if folder != _folder:
                raise RuntimeError(f"metrics already count into {_folder}, not {folder}")
            return
        from prometheus_client import disable_created_metrics, values

        if folder is None:
            # The mode the library takes without a folder. The multiprocess mode serves no
            # ``_created`` series: nor does this one, so a scrape shows the same either way.
            os.environ.pop(FOLDER_VARIABLE, None)
            values.ValueClass = values.MutexValue
            disable_created_metrics()
            _metrics = _Metrics()
            return
        folder.mkdir(parents=True, exist_ok=True)
        os.environ[FOLDER_VARIABLE] = str(folder)
        # The library chose its mode when first imported, which may have been before this
        # (Celery's command line imports Flower's plugin, and Flower imports the library):
        # choose again, now that the folder is set, before the first metric is built.
        values.ValueClass = values.get_value_class()
        forget_dead(folder)
        _metrics = _Metrics()
        _folder = folder


def enabled() -> bool:
    return _metrics is not None


def folder() -> Path | None:
    """The folder this process counts into; None while off or counting in memory."""
    return _folder


_PID = re.compile(r"_(\d+)\.db$")


def forget_dead(folder: Path) -> None:
    """Drop what processes no longer alive left of their live gauges (their counts stay)."""
    from prometheus_client import multiprocess

    for path in folder.glob("*.db"):
        match = _PID.search(path.name)
        if match and not _alive(int(match.group(1))):
            multiprocess.mark_process_dead(int(match.group(1)), str(folder))


def process_ended(pid: int | None = None) -> None:
    """Say a process of this folder ended (gunicorn's ``child_exit``, a pool's child)."""
    if _folder is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid(), str(_folder))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- counting ----------------------------------------------------------------------------------


def webhook(source: str, code: int) -> None:
    if _metrics is not None:
        _metrics.child(_metrics.webhooks, source, code).inc()


def event_stored(event_type: str, *, blocked: bool = False) -> None:
    if _metrics is not None:
        _metrics.child(_metrics.blocked if blocked else _metrics.events, event_type).inc()


def attempt_ended(handler: str, outcome: str, *, final: bool) -> None:
    """One attempt's verdict: ``retry``, or a final status (``succeeded``, ``dead``, ...)."""
    if _metrics is None:
        return
    _metrics.child(_metrics.attempts, handler).inc()
    if outcome == "retry":
        _metrics.child(_metrics.retries, handler).inc()
    elif final:
        _metrics.child(_metrics.deliveries, handler, outcome).inc()
        if outcome == "dead":
            _metrics.child(_metrics.dead_letters, "added").inc()


def dead_letters(action: str, count: int = 1) -> None:
    """``retried`` or ``discarded`` (``added`` is counted with the attempt that died)."""
    if _metrics is not None and count:
        _metrics.dead_letters.labels(action).inc(count)


def handler_started(handler: str, stored: datetime) -> None:
    """A delivery's first attempt starts its handler: the latency since its event's time."""
    if _metrics is not None:
        seconds = (datetime.now(UTC) - stored).total_seconds()
        _metrics.child(_metrics.latency, handler).observe(max(0.0, seconds))


def agent_run(record: Mapping[str, Any]) -> None:
    """An agent run's record (``agents.record.AgentRecord.as_dict``): outcome, usage, tools."""
    if _metrics is None:
        return
    agent, model = str(record.get("agent", "")), str(record.get("model", ""))
    _metrics.agent_runs.labels(agent, str(record.get("outcome", ""))).inc()
    turns = int(record.get("turns") or 0)
    if turns:
        _metrics.model_requests.labels(agent, model).inc(turns)
    for kind, tokens in (record.get("usage") or {}).items():
        if tokens:
            _metrics.tokens.labels(agent, model, kind).inc(tokens)
    for call in record.get("tool_calls") or ():
        outcome = "refused" if call.get("refused") else "error" if call.get("is_error") else "ok"
        _metrics.tool_calls.labels(agent, str(call.get("name", "")), outcome).inc()


# -- the scrape ---------------------------------------------------------------------------------


class StoreCollector:
    """Gauges read at scrape time: the relay's queue, dead letters held, lane depth."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        try:
            relay = self.core.relay_state()
            held = self.core.dead_letters.count()
        except Exception as exc:  # a scrape reports what it can; the store's absence shows
            log.warning("metrics: the event store cannot be read: %s", type(exc).__name__)
            yield GaugeMetricFamily("eda_store_up", "The event store answers the scrape", 0)
            return
        yield GaugeMetricFamily("eda_store_up", "The event store answers the scrape", 1)
        yield GaugeMetricFamily(
            "eda_relay_queue_length", "Stored events waiting for a relay", relay["queue"]
        )
        yield GaugeMetricFamily(
            "eda_relay_oldest_age_seconds",
            "Age of the oldest event waiting for a relay",
            relay["oldest_age_s"],
        )
        yield GaugeMetricFamily("eda_dead_letters_held", "Dead letters in the queue now", held)
        lanes = GaugeMetricFamily("eda_lane_depth", "Messages waiting in a lane", labels=["lane"])
        try:
            depths = self.core.enqueuer.queue_lengths() if self.core.enqueuer else {}
        except Exception as exc:
            log.warning("metrics: the broker cannot be read: %s", type(exc).__name__)
            depths = {}
        for lane, depth in sorted(depths.items()):
            lanes.add_metric([lane], depth)
        yield lanes


def exposition(core: Core | None = None) -> tuple[bytes, str]:
    """The text a scrape gets: this folder's summed counts (or this process's), and the
    store's gauges."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    if _folder is not None:
        MultiProcessCollector(registry, path=str(_folder))
    elif _metrics is not None:
        registry.register(_metrics)
    if core is not None:
        registry.register(StoreCollector(core))
    return generate_latest(registry), CONTENT_TYPE_LATEST
