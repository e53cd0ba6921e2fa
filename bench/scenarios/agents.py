"""Agents: deliveries/s through the agent loop, against the ideal ``concurrency / delay``.

The Procfile's worker runs the bench agent (one model call, no tools) through the
real SDK against the suite's Messages API, which answers after a fixed delay. The
events are stored first, then handed to the relay at once; the
clock runs from there to the last delivery recorded ``succeeded``. A second row
compares with the same number of SDK calls made straight from as many threads of
one process, with no Celery and no store: what this machine and the stand-in
allow at best.

With tools: the same burst for an agent that calls one of the project's own tools
(``get_event_history``) twice before it answers, three model calls a delivery,
against the agent without tools at the same concurrency, in model calls a second
(what a tool costs the worker shows as calls it could not make). And the CPU of one
own tool call, called in process as the runner does, against the same tool run as
its script (a new interpreter), as Gantz runs it.

Cost: the CPU of the worker and the relay per agent delivery (from the hand-over
until the messages are acknowledged), against the CPU of the threads making the
same SDK calls alone; and what a delivery costs beyond its SDK call (ours less
the SDK's per call), against the SDK call's own. That part is split once more: a
burst of as many no-op deliveries through the same worker and relay gives what any
delivery costs (Celery, the relay, the store's start and finish), and the rest is
the agent's own (its journal, prompt, token accounting and the SDK call's share of
a busy worker), against the SDK call's.
"""

from __future__ import annotations

import importlib
import resource
import threading
import time
from collections.abc import Sequence
from typing import Any

from bench.context import Bench, wait_acknowledged, wait_settled
from bench.figures import Figure, judged, median, median_run
from bench.messages_api import MessagesAPI
from bench.scenarios.common import require, statuses, store_events
from bench.services import Process

#: The target: 0.9 of the ideal, and 0.9 of the SDK alone from as many threads.
TARGET = 0.9
#: The agents of bench/agents.yaml: without tools, and with two own-tool calls.
AGENT = "BenchAgent"
#: The concurrency limit of the ``bench.capped`` route (bench/routes.yaml).
CAPPED = 16
TOOL_AGENT = "BenchToolAgent"
#: The handler of bench.noop events: a delivery that calls no model.
NOOP = "bench.handlers:noop"
#: Model calls a delivery of each.
CALLS = {AGENT: 1, TOOL_AGENT: 3, NOOP: 0}
#: The target of a delivery with two own-tool calls against one without tools.
TOOLS_TARGET = 0.9
#: The target of an own tool call's CPU against its script's: at least 20 times cheaper.
OWN_TOOL_TARGET = 0.05
#: The target of a delivery's CPU beyond its SDK call: a quarter of the call's own.
BEYOND_SDK_TARGET = 0.25


def run_burst(
    bench: Bench,
    api: MessagesAPI,
    count: int,
    agent: str = AGENT,
    kind: str = "",
    processes: Sequence[Process | None] = (),
) -> tuple[float, float]:
    """Model calls a second of a burst of ``count`` deliveries to ``agent``, and the CPU
    seconds of ``processes`` (the worker and the relay) per delivery."""
    calls = api.calls
    kind = kind or {AGENT: "agent", TOOL_AGENT: "agent_tools", NOOP: "noop"}[agent]
    ids = [event.id for event in store_events(bench, count, kind)]
    meter = bench.meter(*processes)
    started = time.perf_counter()
    bench.store.rpush(bench.plain_core.keys.dispatch, *ids)
    finished = wait_settled(bench, ids)
    wait_acknowledged(bench)
    cpu = meter.stop().cpu / count
    counts = statuses(bench, ids, agent)
    require(counts == {"succeeded": count}, f"agent deliveries ended as {counts}")
    made = api.calls - calls
    require(made == count * CALLS[agent], f"{made} model calls for {count} deliveries")
    return made / (finished - started), cpu


def _tool_call_cpu(bench: Bench) -> tuple[float, float]:
    """CPU seconds of one ``get_event_history`` call: in process, and as its script."""
    from agents.context import DeliveryContext
    from agents.toolbox import Toolbox
    from eda.tools import load_tools, run_tool

    settings = bench.plain_core.settings
    tool = load_tools(settings.gantz_path)["get_event_history"]
    arguments = {"event_type": "bench.agent_tools", "limit": 1}
    found = bench.plain_core.history("bench.agent_tools", limit=1)
    require(bool(found), "no bench.agent_tools event to read")
    context = DeliveryContext(found[0].event, settings)
    toolbox = Toolbox({tool.name: tool})
    toolbox.call(tool.name, arguments, context)  # the first call imports the script
    samples = bench.sizes.tool_call_samples
    began = time.process_time()
    for _ in range(samples):
        require(not toolbox.call(tool.name, arguments, context).is_error, "own tool failed")
    own = (time.process_time() - began) / samples
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(samples):
        require(run_tool(tool, arguments).ok, "the tool's script failed")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    spent = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return own, spent / samples


def _capped(bench: Bench, api: MessagesAPI, count: int) -> Figure:
    """A burst to an agent whose route allows 16 at once: against 16 / the model's delay.

    The worker runs more threads than the limit: the rest of the burst waits parked, with
    no thread and no message, and is sent again as slots free.
    """
    burst = min(1000, max(count, 4 * CAPPED))
    rate, _ = run_burst(bench, api, burst, AGENT, "capped")
    bench.reset()
    ideal = CAPPED / api.delay
    return Figure(
        "agents_capped",
        f"agents: a burst under concurrency {CAPPED}",
        "/s",
        rate,
        ideal,
        f"ideal {CAPPED}/{api.delay:g} s",
        details={"deliveries": burst},
    )


def _raw_sdk(api: MessagesAPI, threads: int, rounds: int) -> tuple[float, float]:
    """SDK calls per second from ``threads`` threads making ``rounds`` calls each, and the
    CPU seconds of a call (the calling threads' own).

    Each thread has a client of its own, as each of the worker's threads has
    (``agents.backend.shared_client``): 64 threads sharing one client's connection pool
    pay more CPU a call, which would flatter the worker against its baseline. And, as
    the worker's, the clients share one TLS context (building one costs 40 ms of CPU).
    """
    import anthropic
    import httpx

    message: list[Any] = [{"role": "user", "content": "Acknowledge."}]
    spent: list[float] = []
    tls = httpx.create_ssl_context()
    clients = [
        anthropic.Anthropic(
            base_url=api.url,
            api_key="bench",
            max_retries=0,
            http_client=anthropic.DefaultHttpxClient(verify=tls),
        )
        for _ in range(threads)
    ]

    def calls(client: anthropic.Anthropic, count: int) -> None:
        began = time.thread_time()
        for _ in range(count):
            client.messages.create(model="claude-haiku-5-5", max_tokens=64, messages=message)
        spent.append(time.thread_time() - began)

    def run(count: int) -> tuple[float, float]:
        spent.clear()
        started = time.perf_counter()
        pool = [threading.Thread(target=calls, args=(client, count)) for client in clients]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        made = threads * count
        return made / (time.perf_counter() - started), sum(spent) / made

    run(1)  # each thread's connection opened, as the worker's warm-up round does
    return run(rounds)


def measure(bench: Bench, api: MessagesAPI, processes: Sequence[Process | None]) -> list[Figure]:
    """The agent rows; ``processes`` are the worker and the relay (None without one)."""
    concurrency = bench.stack.procfile.concurrency
    ideal = concurrency / api.delay
    count = concurrency * bench.sizes.agent_rounds
    # One round first: the worker imports the model SDK on its first agent delivery, and
    # each of its threads opens its connections (Redis, the API) on its first. This process
    # imports the SDK (for the SDK-alone baseline) meanwhile: a second each, on two cores.
    importing = threading.Thread(target=importlib.import_module, args=("anthropic",))
    importing.start()
    run_burst(bench, api, concurrency)
    importing.join()
    bursts = [run_burst(bench, api, count, processes=processes) for _ in range(bench.sizes.repeats)]
    noops = [run_burst(bench, api, count, NOOP, processes=processes)[1] for _ in bursts]
    bench.reset()
    raw, sdk_cpu = _raw_sdk(api, concurrency, bench.sizes.agent_rounds)
    runs = [(rate, ideal) for rate, _ in bursts]
    ours, _ = median_run(runs)
    details = {
        "pool": bench.stack.procfile.pool,
        "concurrency": concurrency,
        "model_delay_s": api.delay,
        "deliveries": count,
    }
    return [
        *_agent_figures(ours, ideal, runs, raw, details, concurrency, api),
        *_cpu_figures([cpu for _, cpu in bursts], sdk_cpu, concurrency, noops),
        *_tool_figures(bench, api, concurrency, count),
        _capped(bench, api, count),
    ]


def _cpu_figures(
    ours: list[float], sdk: float, concurrency: int, noops: list[float]
) -> list[Figure]:
    """A delivery's CPU against the SDK call's alone; beyond the call, against the call;
    and beyond both the call and a no-op delivery (the agent's own), against the call."""
    runs = [(cpu, sdk) for cpu in ours]
    beyond = [(cpu - sdk, sdk) for cpu in ours]
    noop = median(noops)
    own = [(cpu - sdk - noop, sdk) for cpu in ours]
    baseline = f"SDK alone, {concurrency} threads, per call"
    return [
        Figure(
            "agents_cpu",
            "agents: CPU per delivery (worker + relay)",
            "µs",
            *median_run(runs),
            baseline,
            higher_is_better=False,
            runs=runs,
        ),
        Figure(
            "agents_cpu_beyond_sdk",
            "agents: CPU per delivery beyond its SDK call",
            "µs",
            *median_run(beyond),
            baseline,
            runs=beyond,
            **judged(beyond, BEYOND_SDK_TARGET, higher_is_better=False),
            details={"noop_delivery_cpu_s": noop, "noop_runs": noops},
        ),
        Figure(
            "agents_cpu_own",
            "agents: the same, less a no-op delivery's CPU (the agent's own)",
            "µs",
            *median_run(own),
            baseline,
            higher_is_better=False,
            runs=own,
        ),
    ]


def _tool_figures(bench: Bench, api: MessagesAPI, concurrency: int, count: int) -> list[Figure]:
    """Deliveries with two own-tool calls against none, and one tool call's CPU."""
    run_burst(bench, api, concurrency, TOOL_AGENT)  # warm-up: the tool's first call imports it
    runs = [
        (run_burst(bench, api, count, TOOL_AGENT)[0], run_burst(bench, api, count, AGENT)[0])
        for _ in range(bench.sizes.repeats)
    ]
    with_tools, without = median_run(runs)
    own, script = _tool_call_cpu(bench)
    bench.reset()
    return [
        Figure(
            "agents_tools",
            "agents: model calls/s, two own-tool calls a delivery",
            "/s",
            with_tools,
            without,
            f"no tools, {concurrency} at once",
            target=f"≥ {TOOLS_TARGET}x",
            met=with_tools >= TOOLS_TARGET * without,
            runs=runs,
            details={"deliveries": count, "model_calls_per_delivery": CALLS[TOOL_AGENT]},
        ),
        Figure(
            "own_tool_cpu",
            "tools: CPU of one own tool call, in process",
            "ms",
            own,
            script,
            "the same tool as its script",
            higher_is_better=False,
            target=f"≤ {OWN_TOOL_TARGET}x",
            met=own <= OWN_TOOL_TARGET * script,
        ),
    ]


def _agent_figures(
    ours: float,
    ideal: float,
    runs: list[tuple[float, float]],
    raw: float,
    details: dict[str, Any],
    concurrency: int,
    api: MessagesAPI,
) -> list[Figure]:
    return [
        Figure(
            "agents",
            "agents: deliveries/s",
            "/s",
            ours,
            ideal,
            f"ideal {concurrency}/{api.delay:g} s",
            target=f"≥ {TARGET}x",
            met=ours >= TARGET * ideal,
            runs=runs,
            details=details,
        ),
        Figure(
            "agents_vs_sdk",
            "agents: the same, against the SDK called from threads",
            "/s",
            ours,
            raw,
            f"SDK alone, {concurrency} threads, no Celery",
            **judged([(ours, raw)], TARGET),
        ),
    ]
