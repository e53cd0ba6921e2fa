"""The tools of gantz.yaml, and running one exactly as Gantz does.

A call substitutes the arguments sent into the script's ``args`` and ``stdin``
as plain text (``{{name}}``; an omitted optional argument stays the literal
``{{name}}`` and defaults are not filled in, as with Gantz), exports each
argument as ``GANTZ_ARG_<NAME>``, and runs the command without a shell under
a time limit. ``python``/``python3`` become the running interpreter, so the
scripts use the project's virtualenv. Reading the file is :mod:`eda.gantz_yaml`.

A script's output is read up to ``EDA_TOOL_MAX_OUTPUT_BYTES`` (stdout and stderr
each): past it the script's process group is killed and the call fails, so a
tool cannot make its caller hold more than that. The script's environment is an
allow-list (:func:`eda.settings.child_environment`): no API key, token or secret.

The project's own tools (a ``python scripts/<name>.py`` of this repository,
:func:`own_script`) can also be run in process by their caller, with the same
arguments (:func:`prepare`) and the same JSON result (``scripts.gantz``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eda.errors import InvalidInput
from eda.settings import ROOT, child_environment

#: The parameter types a tool may declare, as JSON Schema names them.
PARAMETER_TYPES = ("string", "integer", "number", "boolean")
#: Commands that mean "the Python interpreter": they run as ``sys.executable``.
PYTHON_COMMANDS = frozenset({"python", "python3"})
#: Seconds to wait for the pipes to close after the process group was killed.
KILL_GRACE = 5.0
#: Most bytes of a script's output read when the caller sets no limit.
DEFAULT_MAX_OUTPUT = 1024 * 1024
#: The project's own scripts: run in process by the agent runner (scripts/<name>.py).
OWN_SCRIPTS = ROOT / "scripts"
#: The script (``scripts/launch.py``) that runs a tool script in the project's environment.
LAUNCHER = "launch"


#: Parameters that carry JSON as text (``publish_event``'s payload): a JSON value is taken too.
JSON_TEXT_PARAMETERS = frozenset({"payload"})


@dataclass(frozen=True)
class Parameter:
    """One argument of a tool; ``default`` is text, as Gantz keeps it."""

    name: str
    type: str
    description: str = ""
    required: bool = False
    default: str | None = None

    @property
    def json_text(self) -> bool:
        """A string parameter that carries JSON (``payload``): a JSON value is taken too."""
        return self.type == "string" and self.name in JSON_TEXT_PARAMETERS

    def schema(self) -> dict[str, Any]:
        """This parameter as a JSON Schema property (the default in its own type)."""
        kind: str | list[str] = ["string", "object", "array"] if self.json_text else self.type
        prop: dict[str, Any] = {"type": kind, "description": self.description}
        if self.default is not None:
            prop["default"] = typed_default(self.type, self.default)
        return prop


@dataclass(frozen=True)
class HttpRequest:
    """The ``http`` form of a Gantz tool: the request a call sends (see eda.http_tools)."""

    url: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str | None = None
    timeout: float = 30.0
    extract_json: str | None = None


@dataclass(frozen=True)
class Tool:
    """A tool of gantz.yaml: what the model sees, and the command that runs it."""

    name: str
    description: str
    parameters: tuple[Parameter, ...]
    command: str
    args: tuple[str, ...]
    stdin: str | None
    working_dir: Path
    timeout: float
    environment: Mapping[str, str] = field(default_factory=dict)
    http: HttpRequest | None = None

    def input_schema(self) -> dict[str, Any]:
        """The JSON Schema of the tool's arguments (closed: unknown arguments are refused)."""
        return {
            "type": "object",
            "properties": {p.name: p.schema() for p in self.parameters},
            "required": [p.name for p in self.parameters if p.required],
            "additionalProperties": False,
        }


@dataclass(frozen=True)
class ToolResult:
    """What a run produced; ``ok`` is exit code 0 within the time limit."""

    ok: bool
    stdout: str
    stderr: str
    exit_code: int | None
    duration: float
    timed_out: bool


def load_tools(path: Path, *, default_timeout: float | None = None) -> dict[str, Tool]:
    """Read and validate a gantz.yaml; the tools by name, in the file's order.

    Raises InvalidInput whose field names the file, the tool and the key at
    fault, e.g. ``gantz.yaml: tools[2] (get_events).parameters[0].type``.
    """
    from eda.gantz_yaml import read_gantz_file  # the file format lives there

    return read_gantz_file(path, default_timeout=default_timeout).tools


def typed_default(kind: str, text: str) -> Any:
    """A default (text, as in gantz.yaml) as a value of the parameter's type."""
    if kind == "integer":
        return int(text)
    if kind == "number":
        number = float(text)
        return int(number) if re.fullmatch(r"[+-]?\d+", text.strip()) else number
    if kind == "boolean":
        return text.strip().lower() == "true"
    return text


def validate_arguments(tool: Tool, arguments: Mapping[str, Any]) -> dict[str, str]:
    """Check arguments against the tool's parameters; the texts Gantz would substitute.

    Only the arguments sent are returned (in parameter order). Raises
    InvalidInput naming the argument: unknown, missing when required, or of
    the wrong type.
    """
    if not isinstance(arguments, Mapping):
        raise InvalidInput("arguments", "must be an object of argument names to values")
    known = {p.name for p in tool.parameters}
    for name in arguments:
        if name not in known:
            expected = ", ".join(sorted(known)) or "none"
            raise InvalidInput(name, f"is not a parameter of {tool.name} (it takes: {expected})")
    texts: dict[str, str] = {}
    for parameter in tool.parameters:
        if parameter.name not in arguments:
            if parameter.required:
                raise InvalidInput(parameter.name, f"is required by {tool.name}")
            continue
        texts[parameter.name] = argument_text(parameter, arguments[parameter.name])
    return texts


def argument_text(parameter: Parameter, value: Any) -> str:
    """One argument as the text Gantz substitutes; InvalidInput when of the wrong type."""
    kind = parameter.type
    if parameter.json_text and isinstance(value, dict | list):
        # MCP clients and models send payload as an object as often as a string holding one.
        return json.dumps(value, ensure_ascii=False)
    if kind == "string" and isinstance(value, str):
        if "\x00" in value:
            raise InvalidInput(parameter.name, "must not contain NUL characters")
        return value
    if kind == "boolean" and isinstance(value, bool):
        return "true" if value else "false"
    if kind in ("integer", "number") and _is_number(value):
        if isinstance(value, int) or value.is_integer():
            return str(int(value))  # 5.0 is the integer 5, as JSON Schema says
        if kind == "number":
            return repr(value)
    article = "an" if kind[0] in "aeiou" else "a"
    raise InvalidInput(parameter.name, f"must be {article} {kind}, not {_json_type(value)}")


def substitute(template: str, texts: Mapping[str, str]) -> str:
    """Replace ``{{name}}`` by each argument sent, in one pass (values are not rescanned)."""
    if not texts:
        return template
    pattern = re.compile("|".join(re.escape("{{" + name + "}}") for name in texts))
    return pattern.sub(lambda match: texts[match.group(0)[2:-2]], template)


@dataclass(frozen=True)
class Prepared:
    """A call ready to run: the command line, stdin and environment Gantz would give it."""

    argv: list[str]
    stdin: str | None
    env: dict[str, str]
    texts: dict[str, str]


def prepare(
    tool: Tool, arguments: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> Prepared:
    """Validate the arguments and build the call; InvalidInput naming a bad argument.

    ``env`` adds variables for this call (over the allow-listed environment and the
    tool's ``environment``; the ``GANTZ_ARG_*`` variables come last).
    """
    texts = validate_arguments(tool, arguments)
    argv = [_executable(tool.command), *(substitute(arg, texts) for arg in tool.args)]
    stdin = substitute(tool.stdin, texts) if tool.stdin is not None else None
    environment = {
        **child_environment(),
        **tool.environment,
        **(env or {}),
        **{f"GANTZ_ARG_{name.upper()}": text for name, text in texts.items()},
    }
    return Prepared(argv, stdin, environment, texts)


def own_script(tool: Tool) -> str | None:
    """The module of the project's own script a tool runs (``scripts.publish_event``), or None.

    A tool may run it directly (``scripts/publish_event.py``) or through the launcher
    that finds the project's environment (``scripts/launch.py publish_event``).
    """
    if tool.http is not None or tool.command not in PYTHON_COMMANDS or not tool.args:
        return None
    script = (tool.working_dir / tool.args[0]).resolve()
    if script.parent != OWN_SCRIPTS or script.suffix != ".py" or not script.is_file():
        return None
    if script.stem != LAUNCHER:
        return f"scripts.{script.stem}"
    named = OWN_SCRIPTS / f"{tool.args[1]}.py" if len(tool.args) > 1 else None
    if named is None or named.parent != OWN_SCRIPTS or not named.is_file():
        return None
    return f"scripts.{named.stem}"


def own_arguments(tool: Tool, argv: list[str]) -> list[str]:
    """The arguments an own script's ``main`` takes, from the tool's prepared command line."""
    launched = (tool.working_dir / tool.args[0]).resolve().stem == LAUNCHER
    return argv[3:] if launched else argv[2:]


def run_tool(
    tool: Tool,
    arguments: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    max_output: int = DEFAULT_MAX_OUTPUT,
) -> ToolResult:
    """Run a tool's script with these arguments, exactly as Gantz would.

    ``env`` adds variables for this call (see :func:`prepare`); at most
    ``max_output`` bytes of stdout (and of stderr) are read, and a script that
    writes more is stopped. An http tool sends its request instead
    (:mod:`eda.http_tools`). Raises InvalidInput for bad arguments; a script that
    cannot start, fails, times out or writes too much is a ToolResult with ``ok``
    False.
    """
    if tool.http is not None:
        from eda.http_tools import run_http  # the http form lives there

        return run_http(tool.http, validate_arguments(tool, arguments))
    call = prepare(tool, arguments, env)
    return _run(call.argv, call.stdin, call.env, tool.working_dir, tool.timeout, max_output)


def _run(
    argv: list[str],
    stdin: str | None,
    env: dict[str, str],
    cwd: Path,
    timeout: float,
    max_output: int = DEFAULT_MAX_OUTPUT,
) -> ToolResult:
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, so a timeout kills it all
        )
    except OSError as exc:
        reason = f"cannot start {argv[0]!r} in {str(cwd)!r}: {exc.strerror or exc}"
        return ToolResult(False, "", reason, None, time.monotonic() - started, False)
    try:
        out, err, why = _bounded_output(process, stdin, started + timeout, max_output)
        if why:
            _kill_group(process)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=KILL_GRACE)
    finally:
        if process.poll() is None:  # interrupted (Ctrl-C): leave no script running
            _kill_group(process)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
    timed_out = why == "timeout"
    code = None if why else process.returncode
    stderr = err.decode(errors="replace")
    if timed_out:
        stderr += f"\ntimed out after {timeout:g} s: the process group was killed"
    elif why:
        stderr += f"\nwrote more than {max_output} bytes: the process group was killed"
    return ToolResult(
        ok=code == 0,
        stdout=out.decode(errors="replace"),
        stderr=stderr.lstrip("\n"),
        exit_code=code,
        duration=time.monotonic() - started,
        timed_out=timed_out,
    )


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group is already gone
        os.killpg(process.pid, signal.SIGKILL)


def _bounded_output(
    process: subprocess.Popen[bytes], stdin: str | None, deadline: float, limit: int
) -> tuple[bytes, bytes, str]:
    """Read stdout and stderr until both close, the deadline, or either passes ``limit``.

    Returns what was read (at most ``limit`` bytes each) and why reading stopped
    early: "" (the pipes closed), "timeout" or "output".
    """
    if process.stdin is not None:
        data = (stdin or "").encode()
        writer = threading.Thread(target=_feed, args=(process.stdin, data), daemon=True)
        writer.start()
    buffers = {"out": bytearray(), "err": bytearray()}
    with selectors.DefaultSelector() as selector:
        assert process.stdout is not None and process.stderr is not None
        selector.register(process.stdout, selectors.EVENT_READ, "out")
        selector.register(process.stderr, selectors.EVENT_READ, "err")
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return bytes(buffers["out"]), bytes(buffers["err"]), "timeout"
            for key, _ in selector.select(left):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                buffer = buffers[key.data]
                buffer.extend(chunk)
                if len(buffer) > limit:
                    del buffer[limit:]
                    return bytes(buffers["out"]), bytes(buffers["err"]), "output"
    return bytes(buffers["out"]), bytes(buffers["err"]), ""


def _feed(pipe: Any, data: bytes) -> None:
    """Write a script's stdin and close it (a script that does not read it is no error)."""
    with contextlib.suppress(OSError):
        pipe.write(data)
    with contextlib.suppress(OSError):
        pipe.close()


def _executable(command: str) -> str:
    return sys.executable if command in PYTHON_COMMANDS else command


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return not (isinstance(value, float) and not math.isfinite(value))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number" if value.is_integer() else "a fractional number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__
