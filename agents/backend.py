"""Where an agent's requests go: the Messages API through the official SDK, or a dry run.

With credentials (``ANTHROPIC_API_KEY``, or ``ANTHROPIC_AUTH_TOKEN``) the
``anthropic`` client is built as any would be, so ``ANTHROPIC_BASE_URL`` and the
SDK's other variables apply; its own retries are off (``max_retries=0``) so that
the delivery's backoff is the one retry policy. The SDK's errors become delivery
errors: rate limits, overload, 5xx, timeouts and connection errors are
:class:`~eda.errors.TransientError` (honouring ``retry-after``); a request the API
refuses (400, 401, 403, 404, ...) is :class:`~eda.errors.PermanentError` with the
API's message.

Without credentials the backend is the dry run: nothing is sent and nothing
imitates a model; the loop records the request it would have sent.

The SDK is imported only when a request is to be sent: every process that
registers the agents (web, scripts) would otherwise pay for importing it.
"""

from __future__ import annotations

import email.utils
import logging
import os
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Protocol

from eda.errors import DeliveryError, ModelBusy, PermanentError, TransientError
from eda.settings import environ

if TYPE_CHECKING:
    import anthropic
    from anthropic.types import Message

log = logging.getLogger(__name__)

#: Seconds one Messages API request may take (the SDK's own default is 10 minutes).
REQUEST_TIMEOUT = 120.0
#: The longest wait a ``retry-after`` header can ask of a delivery, in seconds.
MAX_RETRY_AFTER = 600.0
#: Statuses worth another try: request timeout, conflict, rate limit (5xx are added below).
TRANSIENT_STATUSES = frozenset({408, 409, 429})


class Backend(Protocol):
    """Sends one Messages API request; ``name`` is recorded on the delivery."""

    name: str

    def create(self, request: dict[str, Any]) -> Message:
        """The model's reply; raises TransientError or PermanentError."""


class AnthropicBackend:
    """The Messages API, through an ``anthropic.Anthropic`` client."""

    name = "anthropic"

    def __init__(self, client: anthropic.Anthropic) -> None:
        self.client = client

    def create(self, request: dict[str, Any]) -> Message:
        import anthropic

        try:
            return self.client.messages.create(**request)
        except anthropic.AnthropicError as exc:
            raise delivery_error(exc) from exc


class DryRunBackend:
    """No model: the loop records the request it would have sent and stops."""

    name = "dry_run"

    def create(self, request: dict[str, Any]) -> Message:
        raise PermanentError("the dry-run backend sends nothing")  # the loop never asks it


def has_credentials() -> bool:
    """True when the SDK has a key or token to send (otherwise agents run dry)."""
    return bool(environ("ANTHROPIC_API_KEY") or environ("ANTHROPIC_AUTH_TOKEN"))


@contextmanager
def open_backend() -> Iterator[Backend]:
    """The backend for one delivery: the API when credentials are set, else the dry run."""
    if not has_credentials():
        yield DryRunBackend()
        return
    yield AnthropicBackend(shared_client())


#: Each thread's clients, by process, endpoint and credentials (see :func:`shared_client`).
_local = threading.local()
#: The process's clients, when its threads are greenlets (a gevent or eventlet pool).
_process = SimpleNamespace(clients={})
#: The process's TLS context, by process id: every client's (see :func:`shared_client`).
_tls: dict[int, ssl.SSLContext] = {}


def _green() -> bool:
    """True when threads are greenlets: a gevent or eventlet pool starts one a delivery, so
    a client a thread would be a client (a TLS context, a connection) a delivery."""
    gevent = sys.modules.get("gevent.monkey")
    if gevent is not None and gevent.is_module_patched("threading"):
        return True
    eventlet = sys.modules.get("eventlet.patcher")
    return eventlet is not None and bool(eventlet.is_monkey_patched("thread"))


def shared_client() -> anthropic.Anthropic:
    """This thread's client for the credentials and endpoint the environment names.

    Shared by every delivery the thread runs (the client is thread-safe): a client per
    delivery would build a TLS context and open a connection each time, which costs
    more CPU than the rest of the delivery and kept a worker far below its concurrency.
    One a thread rather than one a process: a worker's 64 threads sharing one client
    share its connection pool, which on every request and every response walks all its
    connections and requests under its lock. The SDK call of a bench agent delivery
    cost the Procfile's worker 1,515-1,819 µs of CPU through one client and 1,320-1,574
    µs through one a thread (the same connections: one a thread either way). Greenlets
    share the process's client.

    The clients share the process's TLS context, httpx's own default (certifi's bundle,
    or ``SSL_CERT_FILE``/``SSL_CERT_DIR``): a context a client loads the CA bundle each
    time, and the bench worker's resident memory grew by about 55 MiB (63 more clients
    in threads: 20 MiB, against 0.2 MiB sharing one).
    """
    import anthropic

    key = (
        os.getpid(),  # a forked child has the forking thread's clients, not its sockets
        environ("ANTHROPIC_BASE_URL"),
        environ("ANTHROPIC_API_KEY"),
        environ("ANTHROPIC_AUTH_TOKEN"),
    )
    holder = _process if _green() else _local
    clients: dict[tuple[object, ...], anthropic.Anthropic] | None = getattr(holder, "clients", None)
    if clients is None:
        clients = holder.clients = {}
    client = clients.get(key)
    if client is None:
        made = anthropic.Anthropic(
            max_retries=0,
            timeout=REQUEST_TIMEOUT,
            http_client=anthropic.DefaultHttpxClient(verify=_process_tls()),
        )
        client = clients.setdefault(key, made)
    return client


def _process_tls() -> ssl.SSLContext:
    """This process's TLS context (contexts are safe to share between threads)."""
    import httpx

    pid = os.getpid()
    context = _tls.get(pid)
    if context is None:
        context = _tls.setdefault(pid, httpx.create_ssl_context())
    return context


def delivery_error(exc: anthropic.AnthropicError) -> DeliveryError:
    """The delivery error an SDK error stands for."""
    import anthropic

    if isinstance(exc, anthropic.APIConnectionError):  # timeouts included
        return TransientError(f"Messages API unreachable: {exc.message}")
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        message = f"Messages API {status} {exc.type or 'error'}: {exc.api_message or exc.message}"
        wait = retry_after(exc.response.headers)
        if status in (429, 529) and wait:
            return ModelBusy(message, retry_after=wait)  # every delivery of the model waits
        if status in TRANSIENT_STATUSES or status >= 500:
            return TransientError(message, retry_after=wait)
        return PermanentError(message)
    return PermanentError(f"Messages API client: {type(exc).__name__}: {exc}")


def retry_after(headers: Any, now: float | None = None) -> float | None:
    """The wait a response asks for (``retry-after-ms``, then ``retry-after`` in seconds
    or as an HTTP date), bounded to :data:`MAX_RETRY_AFTER`; None when it asks none."""
    seconds: float | None = None
    milliseconds = headers.get("retry-after-ms")
    value = headers.get("retry-after")
    if milliseconds is not None:
        seconds = _number(milliseconds, 1000)
    if seconds is None and value is not None:
        seconds = _number(value, 1)
        if seconds is None:
            parsed = email.utils.parsedate_tz(value)
            if parsed is not None:
                seconds = email.utils.mktime_tz(parsed) - (time.time() if now is None else now)
    if seconds is None:
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _number(text: str, per_second: float) -> float | None:
    try:
        value = float(text) / per_second
    except ValueError:
        return None
    return value if value == value else None  # NaN asks for nothing
