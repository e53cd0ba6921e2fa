"""Handler names: what routes and subscriptions may name, and what each one runs.

A handler name is one of
- a name registered in code (``register``/``register_handler``), agents among them;
- an import path ``package.module:function``.

Modules named by the ``handler_modules`` setting are imported when the registry
is first used, in every process (web, worker, scripts), so their registrations
are seen everywhere.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import threading
from collections.abc import Iterable
from typing import Any

from eda.errors import InvalidInput, PermanentError
from eda.handlers import Handler
from eda.imports import IMPORT_PATH, import_path
from eda.routes import Route, check_pattern

_handlers: dict[str, Handler] = {}
_routes: list[Route] = []
_loaded: set[str] = set()
_lock = threading.Lock()


def register(name: str, fn: Handler) -> Handler:
    """Name a handler so routes and subscriptions can use the name."""
    if not name or any(c.isspace() for c in name):
        raise InvalidInput("handler", f"{name!r} is not a handler name")
    existing = _handlers.get(name)
    if existing is not None and existing is not fn:
        raise InvalidInput("handler", f"{name!r} is already registered")
    _handlers[name] = fn
    return fn


def register_handler(pattern: str, fn: Handler, name: str | None = None) -> Handler:
    """Route an event-type pattern to ``fn``, as the seed's router did, but durably named."""
    check_pattern(pattern, "pattern")
    name = name or f"{fn.__module__}:{fn.__qualname__}"
    register(name, fn)
    _routes.append(Route((pattern,), name, origin="code"))
    return fn


def load_modules(modules: Iterable[str]) -> None:
    """Import the modules that register handlers, once each."""
    with _lock:
        for module in modules:
            if module and module not in _loaded:
                importlib.import_module(module)
                _loaded.add(module)


def code_routes() -> list[Route]:
    return list(_routes)


def known(name: str) -> bool:
    """True when ``name`` is a registered handler or an importable function."""
    if name in _handlers:
        return True
    if not IMPORT_PATH.match(name):
        return False
    try:
        resolve(name)
    except PermanentError:
        return False
    return True


def resolve(name: str) -> Handler:
    """The callable behind a handler name; PermanentError when there is none."""
    handler = _handlers.get(name)
    if handler is not None:
        return handler
    if not IMPORT_PATH.match(name):
        raise PermanentError(f"no handler is registered as {name!r}")
    if name.split(".", 1)[0].split(":", 1)[0] in sys.stdlib_module_names:
        # Routes and subscriptions (which tools and agents can make) must not name
        # sys:exit or os:system: a handler is a function of the deployment's own code.
        raise PermanentError(f"handler {name!r} is in the standard library, not a handler")
    try:
        target: Any = import_path(name)
    except (ImportError, AttributeError) as exc:
        raise PermanentError(f"handler {name!r} cannot be imported: {exc}") from None
    if not inspect.isfunction(target):
        raise PermanentError(f"handler {name!r} is not a Python function")
    return target


def names() -> list[str]:
    return sorted(_handlers)
