"""Long operations on the command line: a progress bar, and Ctrl-C between two items only.

Replay and retry-all enqueue one delivery after another. Stopping in the middle
of one could leave a delivery recorded as queued with no message on the broker,
so Ctrl-C is noted and acted on at the next ``progress(done, total)`` call: the
core calls it after each item is complete.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class Interrupts:
    """While active, SIGINT sets a flag instead of raising; :meth:`checkpoint` raises it."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():  # signals need the main thread
            self._previous = signal.signal(signal.SIGINT, self._note)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _note(self, signum: int, frame: FrameType | None) -> None:
        if not self.requested:
            click.echo("\nstopping after the current delivery…", err=True)
        self.requested = True

    def checkpoint(self) -> None:
        """Raise KeyboardInterrupt here, between two items, when Ctrl-C was pressed."""
        if self.requested:
            raise KeyboardInterrupt


class Tracker:
    """The ``progress(done, total)`` callback: moves the bar, remembers the count, and
    is where a pending Ctrl-C takes effect."""

    def __init__(self, bar: Progress, interrupts: Interrupts) -> None:
        self.bar = bar
        self.task = bar.add_task("", total=None)
        self.interrupts = interrupts
        self.done = 0
        self.total = 0

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        self.bar.update(self.task, completed=done, total=total)
        self.interrupts.checkpoint()


@contextmanager
def tracked(description: str, *, quiet: bool) -> Iterator[Tracker]:
    """A progress bar on stderr (hidden when ``quiet`` or not a terminal) with deferred Ctrl-C."""
    err = Console(stderr=True)
    columns = (
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    disable = quiet or not err.is_terminal
    with Interrupts() as interrupts, Progress(*columns, console=err, disable=disable) as bar:
        yield Tracker(bar, interrupts)
