"""Handlers: what they are, how they say "not for me", and the registry that names them.

A handler is a callable ``handler(event: Event) -> dict | None``. It is run once
per delivery (event x handler). What it returns, when a JSON object, is kept on
the delivery's attempt as its ``outcome``. It may raise
:class:`~eda.errors.TransientError` (retry with backoff),
:class:`~eda.errors.PermanentError` (dead-letter at once), :class:`Skip`, or
:class:`Stop` (it stopped short on a limit: recorded ``stopped``, not retried).
Any other exception counts as transient unless its retry policy names it
permanent. An exception may carry an ``outcome`` attribute (a JSON object): it
is recorded too, so work done before a failure stays visible.

A handler name is one of
- a name registered in code (:func:`register`, :func:`register_handler`) or by the
  composition root (``tasks.connect`` registers the agents of the settings' agents
  file), refused there unless it can be called with one event;
- an import path ``package.module:function`` of a function defined in a module of
  ``EDA_HANDLER_MODULES``, or named by the routes file (which operators write).
  Run-time subscriptions, which tools and agents can make, can name nothing else:
  not ``eda.tools:subprocess.run``, not ``yaml:unsafe_load``.

A delivery whose handler name resolves to nothing runnable (a subscription written
to the store by hand, a function since removed or changed) is dead-lettered at once
with the reason; the worker goes on.
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eda.errors import InvalidInput, PermanentError
from eda.event import Event
from eda.imports import IMPORT_PATH
from eda.retry import RetryOverride
from eda.routes import Route, check_pattern

if TYPE_CHECKING:
    from eda.flow import FlowRules

#: The signature every handler has.
Handler = Callable[[Event], "dict[str, Any] | None"]


class Skip(Exception):
    """Raised by a handler or pipeline stage: the delivery is recorded ``skipped``.

    ``stage`` names what decided (a filter's name), ``reason`` says why.
    """

    def __init__(self, reason: str, *, stage: str = "", outcome: dict[str, Any] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.stage = stage
        self.outcome = outcome


@dataclass(frozen=True)
class HandlerMeta:
    """What an agent declares beside its function: retry policy, flow rules, model, and the
    event types it publishes."""

    retry: RetryOverride | None = None
    flow: FlowRules | None = None
    model: str | None = None
    publishes: tuple[str, ...] = ()


class Stop(Exception):
    """Raised by a handler that ended on a limit before finishing (an agent's turn limit,
    token budget, output limit or a refusal): the delivery is recorded ``stopped``, a
    terminal status apart from ``succeeded``, and is not retried (it would stop again).

    ``reason`` says which limit; ``outcome`` is what the handler did until then.
    """

    def __init__(self, reason: str, *, outcome: dict[str, Any] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.outcome = outcome


@dataclass
class HandlerRegistry:
    """Handler names of one deployment: what routes and subscriptions may name."""

    #: Modules whose functions may be named by import path anywhere.
    modules: tuple[str, ...] = ()
    #: Import paths the routes file names (trusted: operators write it).
    trusted: set[str] = field(default_factory=set)
    _handlers: dict[str, Handler] = field(default_factory=dict)
    _meta: dict[str, HandlerMeta] = field(default_factory=dict)
    _routes: list[Route] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def register(
        self,
        name: str,
        fn: Handler,
        retry: RetryOverride | None = None,
        *,
        flow: FlowRules | None = None,
        model: str | None = None,
        publishes: tuple[str, ...] = (),
    ) -> Handler:
        """Name a handler so routes and subscriptions can use the name.

        An agent registers with its retry policy, flow rules, model and what it publishes.
        """
        if not name or any(c.isspace() for c in name):
            raise InvalidInput("handler", f"{name!r} is not a handler name")
        problem = call_problem(fn)
        if problem:
            raise InvalidInput("handler", f"handler {name!r} {problem}")
        with self._lock:
            existing = self._handlers.get(name)
            if existing is not None and existing is not fn:
                raise InvalidInput("handler", f"{name!r} is already registered")
            self._handlers[name] = fn
            if retry is not None or flow is not None or model is not None or publishes:
                self._meta[name] = HandlerMeta(retry, flow, model, publishes)
        return fn

    def register_handler(self, pattern: str, fn: Handler, name: str | None = None) -> Handler:
        """Route an event-type pattern to ``fn`` under a durable name."""
        check_pattern(pattern, "pattern")
        name = name or f"{getattr(fn, '__module__', '')}:{getattr(fn, '__qualname__', fn)}"
        self.register(name, fn)
        self._routes.append(Route((pattern,), name, origin="code"))
        return fn

    def include(self, other: HandlerRegistry) -> None:
        """Take every name and code route of ``other`` (the process-wide registrations)."""
        for name, fn in list(other._handlers.items()):
            meta = other._meta.get(name, HandlerMeta())
            self.register(
                name, fn, meta.retry, flow=meta.flow, model=meta.model, publishes=meta.publishes
            )
        self._routes.extend(other._routes)

    def code_routes(self) -> list[Route]:
        return list(self._routes)

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def retry(self, name: str) -> RetryOverride | None:
        """The retry policy registered with a handler (an agent's ``retry:``), if any."""
        return self._meta.get(name, HandlerMeta()).retry

    def flow(self, name: str) -> FlowRules | None:
        """The flow rules registered with a handler (an agent's), if any."""
        return self._meta.get(name, HandlerMeta()).flow

    def model(self, name: str) -> str | None:
        """The model a handler calls (an agent's), whose pauses it waits out."""
        return self._meta.get(name, HandlerMeta()).model

    def published_types(self) -> list[str]:
        """The event types (patterns) the registered agents may publish, each once."""
        found = (p for meta in self._meta.values() for p in meta.publishes)
        return sorted(set(found))

    def known(self, name: str, *, trusted: bool = False) -> bool:
        """True when ``name`` can be run: registered, or an allowed importable function.

        ``trusted`` (the routes file) allows any import path of the deployment's code.
        """
        try:
            self.resolve(name, trusted=trusted)
        except PermanentError:
            return False
        return True

    def resolve(self, name: str, *, trusted: bool = False) -> Handler:
        """The callable behind a handler name; PermanentError says why there is none."""
        handler = self._handlers.get(name)
        if handler is not None:
            return handler
        if not IMPORT_PATH.match(name):
            raise PermanentError(f"no handler is registered as {name!r}")
        module_name, _, attribute = name.partition(":")
        if "." in attribute:
            raise PermanentError(
                f"handler {name!r}: name a module's own function, not an attribute path"
            )
        if not (trusted or name in self.trusted or _within(module_name, self.modules)):
            raise PermanentError(
                f"handler {name!r} is not registered, named by the routes file, "
                "or in a module of EDA_HANDLER_MODULES"
            )
        try:
            target: Any = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise PermanentError(f"handler {name!r} cannot be imported: {exc}") from None
        if not inspect.isfunction(target) or target.__module__ != module_name:
            raise PermanentError(f"handler {name!r} is not a function defined in {module_name}")
        return checked(name, target)


def checked(name: str, fn: Callable[..., Any]) -> Handler:
    """``fn`` when it can be called with one event; PermanentError otherwise."""
    problem = call_problem(fn)
    if problem:
        raise PermanentError(f"handler {name!r} {problem}")
    return fn


def call_problem(fn: object) -> str | None:
    """Why ``fn`` cannot be called with one event, or None when it can (or cannot be told)."""
    if not callable(fn):
        return "is not callable"
    try:
        inspect.signature(fn).bind(None)
    except TypeError:
        return "cannot be called with one event"
    except ValueError:  # no signature to read (a builtin): call it and see
        pass
    return None


def _within(module: str, modules: Iterable[str]) -> bool:
    return any(module == m or module.startswith(m + ".") for m in modules)


#: Handlers registered in code as their modules are imported (``EDA_HANDLER_MODULES``);
#: every registry the composition root builds takes them in.
CODE = HandlerRegistry()
_imported: set[str] = set()
_import_lock = threading.Lock()


def register(name: str, fn: Handler) -> Handler:
    """Name a handler in code, for every registry this process builds."""
    return CODE.register(name, fn)


def register_handler(pattern: str, fn: Handler, name: str | None = None) -> Handler:
    """Route an event-type pattern to ``fn`` in code, as the seed's router did, durably named."""
    return CODE.register_handler(pattern, fn, name)


def import_modules(modules: Iterable[str]) -> None:
    """Import the modules that register handlers, once each."""
    with _import_lock:
        for module in modules:
            if module and module not in _imported:
                importlib.import_module(module)
                _imported.add(module)


def registry_for(modules: tuple[str, ...]) -> HandlerRegistry:
    """A registry with the code registrations of ``modules`` (imported first)."""
    import_modules(modules)
    registry = HandlerRegistry(modules=modules)
    registry.include(CODE)
    return registry
