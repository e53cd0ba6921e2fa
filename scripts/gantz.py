"""How the scripts of ``gantz.yaml`` take their input and give their answer.

Gantz runs a tool as ``python scripts/<tool>.py {{arg}} ...``: it replaces the
templates of the arguments actually sent and leaves the others as literal
``{{name}}`` text (it fills in no defaults), exports every argument sent as
``GANTZ_ARG_<NAME>``, and ignores ``stdin:``. Our own MCP server does honour
``stdin:``. So a script treats an empty or unreplaced argument as not given,
reads its payload from stdin and falls back to ``GANTZ_ARG_PAYLOAD``, prints
its answer as JSON on stdout and exits 0, or prints a JSON error on stderr and
exits non-zero. A user's mistake never shows a traceback.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from eda import settings
from eda.core import Core
from eda.errors import InvalidInput, NotFound, StoreUnavailable

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
    stdin = sys.stdin
    if stdin is not None and not stdin.isatty():
        text = given(stdin.read())
        if text is not None:
            return text
    return given(settings.environ(PAYLOAD_VARIABLE)) or ""


def lineage() -> dict[str, str]:
    """The causation and correlation ids of the event being handled, when a delivery runs us.

    An event published from a handler's tool carries them, so a chain webhook -> agent ->
    new event can be followed.
    """
    found = {}
    for field, variable in LINEAGE_VARIABLES.items():
        value = given(settings.environ(variable))
        if value is not None:
            found[field] = value
    return found


def connect() -> Core:
    """The dispatching core API the scripts call, configured from the environment."""
    from tasks import connect as connect_tasks

    return connect_tasks(settings.load())


def run(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> NoReturn:
    """Run ``main`` on the command-line arguments, print its result as JSON and exit.

    Exits 0 with the result on stdout; on bad input, an unknown id or an unreachable
    store prints ``{"error", "field", "message"}`` on stderr and exits 2, 3 or 4.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = main(args)
    except NotFound as exc:
        _fail(exc.as_dict(), EXIT_NOT_FOUND)
    except InvalidInput as exc:
        _fail(exc.as_dict(), EXIT_INVALID)
    except StoreUnavailable as exc:
        error = {"error": "store_unavailable", "field": None, "message": str(exc)}
        _fail(error, EXIT_UNAVAILABLE)
    except Exception as exc:  # a caller (a model, often) gets one JSON line, not a traceback
        error = {"error": "internal", "field": None, "message": f"{type(exc).__name__}: {exc}"}
        _fail(error, EXIT_INTERNAL)
    print(json.dumps(result, indent=2))
    sys.exit(0)


def _fail(error: dict[str, Any], code: int) -> NoReturn:
    print(json.dumps(error), file=sys.stderr)
    sys.exit(code)
