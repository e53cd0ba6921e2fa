"""CPU per agent delivery and per no-op delivery, worker and relay, in alternating bursts.

``python -m bench.agent_cpu [--rounds N] [--repeats N] [--workers N] [--concurrency C]``
starts what ``python -m bench`` starts for its agents rows (a Redis server, the
Messages API stand-in answering after 0.5 s, the ``Procfile``'s worker and relay),
warms the worker up, then runs ``repeats`` pairs of bursts: ``rounds`` times the
worker's concurrency deliveries to the bench agent, then as many no-op deliveries.
For each burst it prints the CPU the worker (its user and system time apart) and
the relay spent per delivery, from their ``/proc/<pid>/stat`` counters, and at the
end the median of each kind and the workers' resident memory. ``--workers 2
--concurrency 32`` runs the same concurrency as two worker processes.

It is the agents rows' CPU measurement alone, in about a minute: to compare two
versions of the code, run it in each, in turn, several times (the machine's other
work moves a run's figures by a tenth or more).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
from pathlib import Path
from statistics import median

from bench.cost import TICK
from bench.messages_api import MessagesAPI
from bench.procfile import read_procfile
from bench.services import Process, Stack
from bench.sizes import MODES

#: The Procfile's concurrency, as its worker line writes it.
CONCURRENCY = "${EDA_WORKER_CONCURRENCY:-64}"


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.agent_cpu", description=__doc__)
    parser.add_argument("--rounds", type=int, default=8, help="a burst: this many rounds")
    parser.add_argument("--repeats", type=int, default=3, help="pairs of bursts")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--concurrency", type=int, help="each worker's (default: Procfile's)")
    return parser.parse_args(argv)


def times(process: Process) -> tuple[int, int]:
    """User and system clock ticks of a process (every thread)."""
    fields = Path(f"/proc/{process.pids()[0]}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def main(argv: list[str] | None = None) -> None:
    options = arguments(argv)
    procfile = read_procfile()
    if options.concurrency:
        worker = procfile.worker.replace(CONCURRENCY, str(options.concurrency))
        procfile = dataclasses.replace(procfile, worker=worker)
    with (
        tempfile.TemporaryDirectory(prefix="eda-agent-cpu-") as folder,
        MessagesAPI(MODES["full"].model_delay) as api,
        Stack(Path(folder), procfile, api.url) as stack,
    ):
        # The Celery app of this process reads its broker from the environment on import.
        os.environ.clear()
        os.environ.update(stack.env)
        from bench.context import Bench
        from bench.scenarios.agents import AGENT, NOOP, run_burst

        bench = Bench(stack, MODES["full"])
        workers = [stack.worker(f"worker{n}") for n in range(options.workers)]
        relay = stack.relay("relay")
        concurrency = procfile.concurrency * options.workers
        run_burst(bench, api, concurrency)  # the SDK imported, each thread's connections opened
        run_burst(bench, api, concurrency, NOOP)
        count = concurrency * options.rounds
        spent: dict[str, list[float]] = {AGENT: [], NOOP: []}
        for _ in range(options.repeats):
            for handler, name in ((AGENT, "agent"), (NOOP, "no-op")):
                before = [times(worker) for worker in workers]
                rate, cpu = run_burst(bench, api, count, handler, processes=[*workers, relay])
                after = [times(worker) for worker in workers]
                user, system = (
                    sum(a[i] - b[i] for a, b in zip(after, before, strict=True)) for i in (0, 1)
                )
                spent[handler].append(cpu)
                calls = f", {rate:.1f} model calls/s" if handler == AGENT else ""
                print(
                    f"{name:6} {cpu * 1e6:6.0f} µs a delivery (workers: user "
                    f"{user / TICK / count * 1e6:.0f}, system {system / TICK / count * 1e6:.0f})"
                    + calls,
                    flush=True,
                )
        for handler, name in ((AGENT, "agent"), (NOOP, "no-op")):
            runs = ", ".join(f"{cpu * 1e6:.0f}" for cpu in spent[handler])
            print(f"{name}: median {median(spent[handler]) * 1e6:.0f} µs ({runs})")
        resident = sum(worker.rss_bytes() for worker in workers) / 2**20
        print(f"workers' resident memory at the end: {resident:.1f} MiB")


if __name__ == "__main__":
    main()
