"""How the scripts of ``gantz.yaml`` take their input and give their answer.

Gantz runs a tool as ``python scripts/<tool>.py {{arg}} ...``: it replaces the
templates of the arguments actually sent and leaves the others as literal
``{{name}}`` text (it fills in no defaults), exports every argument sent as
``GANTZ_ARG_<NAME>``, and ignores ``stdin:``. Our own MCP server does honour
``stdin:``. So a script treats an empty or unreplaced argument as not given,
reads its payload from stdin and falls back to ``GANTZ_ARG_PAYLOAD``, prints
its answer as JSON on stdout and exits 0, or prints a JSON error on stderr and
exits non-zero. A user's mistake never shows a traceback.

The agent runner calls a script's ``main`` in process instead of starting it
(:func:`call_in_process`): the same arguments, validation and JSON, with the
call's stdin and environment and the runner's core in place of the process's
(a context variable, so concurrent calls on threads never mix). A script only
imports what it uses: the read-only ones build a core without Celery
(:func:`reader`), the others the dispatching one (:func:`connect`).
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from eda import settings
from eda.errors import InvalidInput, NotFound, StoreUnavailable

if TYPE_CHECKING:
    from eda.core import Core

#: A template Gantz left in place because the argument was not sent.
UNREPLACED = re.compile(r"\{\{\s*[A-Za-z_][A-Za-z0-9_]*\s*\}\}")
#: The environment variable Gantz puts the ``payload`` argument in.
PAYLOAD_VARIABLE = "GANTZ_ARG_PAYLOAD"
#: Set by the tool runner when a script runs for a delivery: event field -> variable.
LINEAGE_VARIABLES = {"causation_id": "EDA_CAUSATION_ID", "correlation_id": "EDA_CORRELATION_ID"}
#: Exit codes: the input was wrong, an id names nothing, the store is unreachable.
EXIT_INVALID, EXIT_NOT_FOUND, EXIT_UNAVAILABLE = 2, 3, 4
#: Exit code of a failure that is not the caller's doing (no broker, a bug).
EXIT_INTERNAL = 1
#: Set by the agent runner for a tool call: what the call's side effects are keyed by.
IDEMPOTENCY_VARIABLE = "EDA_IDEMPOTENCY_KEY"


@dataclass(frozen=True)
class Invocation:
    """A script's main called in process: its stdin, its environment, the caller's cores
    (one to read with, one to publish through, and the dispatching one, built on demand)."""

    stdin: str | None
    env: Mapping[str, str]
    core: Core
    publisher: Core
    dispatching: Callable[[], Core]


_invocation: ContextVar[Invocation | None] = ContextVar("script_invocation", default=None)


def variable(name: str) -> str | None:
    """A variable of the script's environment (the in-process call's, else the process's)."""
    invocation = _invocation.get()
    if invocation is not None:
        return invocation.env.get(name)
    return settings.environ(name)


def given(value: str | None) -> str | None:
    """The argument stripped of spaces, or None when it is empty or an unreplaced template."""
    if value is None:
        return None
    stripped = value.strip()
    if not stripped or UNREPLACED.fullmatch(stripped):
        return None
    return stripped


def arguments(argv: Sequence[str], names: Sequence[str], required: int = 0) -> list[str | None]:
    """The positional arguments by name (None where not given); the first ``required`` must be.

    Raises InvalidInput naming a missing argument, or ``arguments`` when there are too many.
    """
    if len(argv) > len(names):
        raise InvalidInput(
            "arguments", f"expected at most {len(names)} ({', '.join(names)}), got {len(argv)}"
        )
    values = [given(value) for value in argv] + [None] * (len(names) - len(argv))
    for name, value in zip(names[:required], values, strict=False):
        if value is None:
            raise InvalidInput(name, "is required")
    return values


def whole_number(text: str | None, field: str, default: int) -> int:
    """An argument as an integer, ``default`` when not given; InvalidInput naming ``field``.

    Range checks belong to the core, which says what it accepts.
    """
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise InvalidInput(field, f"{text!r} is not a whole number") from None


def read_payload() -> str:
    """The payload text: stdin, else ``GANTZ_ARG_PAYLOAD`` when stdin is empty or a terminal.

    Returns "" when neither holds anything (an unreplaced ``{{payload}}`` counts as nothing).
    """
    invocation = _invocation.get()
    if invocation is not None:
        text = given(invocation.stdin or "")
        if text is not None:
            return text
    else:
        stdin = sys.stdin
        if stdin is not None and not stdin.isatty():
            text = given(stdin.read())
            if text is not None:
                return text
    return given(variable(PAYLOAD_VARIABLE)) or ""


def lineage() -> dict[str, str]:
    """The causation and correlation ids of the event being handled, when a delivery runs us.

    An event published from a handler's tool carries them, so a chain webhook -> agent ->
    new event can be followed.
    """
    found = {}
    for field, name in LINEAGE_VARIABLES.items():
        value = given(variable(name))
        if value is not None:
            found[field] = value
    return found


def idempotency_key() -> str | None:
    """The key the tool call's side effects are deduplicated on, when a delivery runs us."""
    return given(variable(IDEMPOTENCY_VARIABLE))


def connect() -> Core:
    """The dispatching core API the scripts call, configured from the environment."""
    invocation = _invocation.get()
    if invocation is not None:
        return invocation.dispatching()
    from tasks import connect as connect_tasks

    return connect_tasks(settings.load())


def publisher() -> Core:
    """The core to publish through: the dispatching one, or in process the caller's."""
    invocation = _invocation.get()
    return invocation.publisher if invocation is not None else connect()


def reader() -> Core:
    """A core for scripts that only read or set statuses: no Celery, no handlers to load."""
    invocation = _invocation.get()
    if invocation is not None:
        return invocation.core
    from eda.core import Core

    return Core(settings.load())


def call_in_process(
    module: str, argv: Sequence[str], invocation: Invocation
) -> tuple[str, str, int]:
    """Run ``scripts.<name>``'s main as its process would: (stdout, stderr, exit code)."""
    main = importlib.import_module(module).main
    token = _invocation.set(invocation)
    try:
        return answer(main, list(argv))
    finally:
        _invocation.reset(token)


def answer(main: Callable[[list[str]], Any], argv: list[str]) -> tuple[str, str, int]:
    """What a script prints and its exit code: the result as JSON, or a JSON error."""
    try:
        result = main(argv)
    except NotFound as exc:
        return _failed(exc.as_dict(), EXIT_NOT_FOUND)
    except InvalidInput as exc:
        return _failed(exc.as_dict(), EXIT_INVALID)
    except StoreUnavailable as exc:
        error = {"error": "store_unavailable", "field": None, "message": str(exc)}
        return _failed(error, EXIT_UNAVAILABLE)
    except Exception as exc:  # a caller (a model, often) gets one JSON line, not a traceback
        error = {"error": "internal", "field": None, "message": f"{type(exc).__name__}: {exc}"}
        return _failed(error, EXIT_INTERNAL)
    return json.dumps(result, indent=2) + "\n", "", 0


def run(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> NoReturn:
    """Run ``main`` on the command-line arguments, print its result as JSON and exit.

    Exits 0 with the result on stdout; on bad input, an unknown id or an unreachable
    store prints ``{"error", "field", "message"}`` on stderr and exits 2, 3 or 4.
    """
    out, err, code = answer(main, list(sys.argv[1:] if argv is None else argv))
    sys.stdout.write(out)
    sys.stderr.write(err)
    sys.exit(code)


def _failed(error: dict[str, Any], code: int) -> tuple[str, str, int]:
    return "", json.dumps(error) + "\n", code
