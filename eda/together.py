"""Script calls of concurrent callers sent together: a group commit.

A web process answers many webhooks at once (gunicorn's gevent worker, or threads),
and each stores its event with one script call: one Redis round trip each. Under
load, most of what a round trip costs the process is the round trip itself (the
connection pool's checks, the socket, the event loop), not the call. So while one
caller's round trip is under way, the calls that arrive meanwhile wait, and the next
round trip sends them all, in one pipeline.

Nothing is answered before Redis has answered it: each caller gets its own call's
reply, or its own error, once the round trip that carried it is back, so a caller
told "stored" was stored. A caller alone sends its call alone, as before; a round
trip that fails fails every call it carried (each caller raises the error and
answers it, e.g. with a 503). Who sends a batch is one of its callers, never a
thread of its own: there is nothing to start or stop, and it works the same with
threads and with gevent's greenlets (whose monkey-patching makes ``threading``'s
lock and event cooperative).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from eda.errors import StoreUnavailable

#: What sends a batch of calls in one round trip: each reply, or its error, in its place.
Send = Callable[[list[Any]], list[Any]]


class _Call:
    """One caller's call and, once answered, its reply; ``batch`` when it is to send one.
    Only a caller that queues waits, so only it gets an event to wait on."""

    __slots__ = ("answered", "batch", "call", "reply")

    def __init__(self, call: Any) -> None:
        self.call = call
        self.reply: Any = None
        self.answered: threading.Event | None = None
        self.batch: list[_Call] | None = None


class Together:
    """Run calls through ``send``; those that arrive during a round trip go in the next.

    The caller that finds no round trip under way sends its call. The others queue.
    When a round trip is back, its sender hands what queued meanwhile to the first of
    those callers, which sends it as one batch, and answers the callers of its own: no
    caller waits for more than the round trip under way and its own.
    """

    def __init__(self, send: Send) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._queued: list[_Call] = []
        self._sending = False

    def run(self, call: Any) -> Any:
        """The reply to ``call`` once Redis answered it; its error raised."""
        mine = _Call(call)
        with self._lock:
            if self._sending:
                mine.answered = threading.Event()
                self._queued.append(mine)
            else:
                self._sending = True
                mine.batch = [mine]
        if mine.answered is not None:
            try:
                mine.answered.wait()
            except BaseException:  # this caller is stopped while it waits (gevent's kill)
                self._abandon(mine)
                raise
        if mine.batch is not None:  # this caller sends: its own call, or what queued
            self._send_batch(mine.batch)
        if isinstance(mine.reply, BaseException):
            raise mine.reply
        return mine.reply

    def _send_batch(self, batch: list[_Call]) -> None:
        try:
            replies = self._send([item.call for item in batch])
        except Exception as exc:  # the round trip failed: so did each call it carried
            replies = [exc] * len(batch)
        except BaseException:  # the sender is stopped: its batch may or may not be stored
            stopped = StoreUnavailable("the round trip carrying this call was interrupted")
            self._answer(batch, [stopped] * len(batch))
            raise
        self._answer(batch, replies)

    def _answer(self, batch: list[_Call], replies: list[Any]) -> None:
        """Hand what queued to its first caller, then give each caller of ``batch`` its
        reply."""
        self._hand_over()
        for item, reply in zip(batch, replies, strict=True):
            item.reply = reply
            if item.answered is not None:
                item.answered.set()

    def _hand_over(self, batch: list[_Call] | None = None) -> None:
        """The next round trip: ``batch`` and what queued, sent by their first caller."""
        with self._lock:
            waiting = [*(batch or []), *self._queued]
            self._queued = []
            self._sending = bool(waiting)
            if waiting:
                waiting[0].batch = waiting
        if waiting and waiting[0].answered is not None:  # each that queued has one
            waiting[0].answered.set()

    def _abandon(self, mine: _Call) -> None:
        """A caller stopped while it waited: its call is not sent; a batch it was handed
        is, by the next of its callers."""
        with self._lock:
            if mine in self._queued:
                self._queued.remove(mine)
                return
            handed = mine.batch
        if handed is not None:  # handed a batch, and stopped before sending it
            self._hand_over([item for item in handed if item is not mine])
