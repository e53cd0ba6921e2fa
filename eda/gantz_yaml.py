"""Reading gantz.yaml strictly, with errors that name the file, the tool and the key.

The schema is Gantz's: top-level ``name``, ``description``, ``version``,
``server``, ``tools[]``; a tool has ``name``, ``description``, ``parameters[]``
(``name``, ``type``, ``description``, ``required``, ``default``),
``environment`` and exactly one of ``script`` (``command``, ``args``,
``working_dir``, ``timeout``) or ``http`` (``method``, ``url``, ``headers``,
``body``, ``timeout``, ``extract_json``). ``script.stdin`` is ours (Gantz
ignores it). ``${VAR}`` and ``$VAR`` are expanded across the file before it is
parsed (an unset variable becomes empty), as Gantz does. Where Gantz quietly
ignores a mistake (an unknown key, a bad timeout), this reader refuses it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import yaml

from eda.errors import InvalidInput
from eda.settings import environ
from eda.tools import PARAMETER_TYPES, HttpRequest, Parameter, Tool

#: Keys each level of the file may have.
FILE_KEYS = ("name", "description", "version", "server", "tools")
TOOL_KEYS = ("name", "description", "parameters", "environment", "script", "http")
PARAMETER_KEYS = ("name", "type", "description", "required", "default")
SCRIPT_KEYS = ("command", "args", "stdin", "working_dir", "timeout", "shell")
HTTP_KEYS = ("method", "url", "headers", "body", "timeout", "extract_json")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
#: Tool names as the MCP and Messages APIs accept them.
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Parameter names become GANTZ_ARG_<NAME> variables, so they are identifiers.
PARAMETER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
#: ``${NAME}`` or ``$NAME``, as Go's os.ExpandEnv reads them.
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
#: A Go duration such as ``30s``, ``1m30s`` or ``500ms``.
DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1,
    "m": 60,
    "h": 3600,
}
#: Gantz's time limit when a tool sets none, in seconds.
DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class GantzFile:
    """A whole gantz.yaml: the server's name and version, and its tools by name."""

    name: str
    version: str
    description: str
    tools: dict[str, Tool]


class _StrictLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_gantz_file(path: Path, *, default_timeout: float | None = None) -> GantzFile:
    """Read, expand and validate a gantz.yaml; InvalidInput names the file, tool and key."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(where, f"cannot be read: {exc.strerror or exc}") from None
    try:
        document = yaml.load(expand_variables(text), Loader=_StrictLoader)  # noqa: S506
    except yaml.YAMLError as exc:
        raise InvalidInput(where, f"is not valid YAML: {_yaml_problem(exc)}") from None
    top = _mapping(document, where)
    _known_keys(top, FILE_KEYS, where)
    tools_list = top.get("tools")
    if not isinstance(tools_list, list):
        raise InvalidInput(f"{where}: tools", "is required: a list of tools")
    timeout = default_timeout if default_timeout is not None else DEFAULT_TIMEOUT
    folder = Path(path).resolve().parent
    tools = by_name(
        tools_list, lambda entry, at: _tool(entry, at, folder, timeout), f"{where}: tools"
    )
    _server(top, where)
    return GantzFile(
        name=_optional_text(top, "name", where) or "gantz",
        version=_scalar_text(top.get("version") or "1.0.0", _at(where, "version")),
        description=_optional_text(top, "description", where) or "",
        tools=tools,
    )


class Named(Protocol):
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=Named)


def by_name(entries: list[Any], build: Callable[[Any, str], N], where: str) -> dict[str, N]:
    """Build each entry of a YAML list, keyed by its name; a name used twice is refused."""
    built: dict[str, N] = {}
    for index, entry in enumerate(entries):
        item = build(entry, f"{where}[{index}]")
        if item.name in built:
            raise InvalidInput(f"{where}[{index}] ({item.name}).name", "is used twice")
        built[item.name] = item
    return built


def expand_variables(text: str) -> str:
    """Expand ``${NAME}`` and ``$NAME`` from the environment; unset ones become empty."""
    return VARIABLE.sub(lambda m: environ(m.group(1) or m.group(2)) or "", text)


def _tool(entry: Any, where: str, folder: Path, default_timeout: float) -> Tool:
    raw = _mapping(entry, where)
    name = _text(raw, "name", where)
    if not TOOL_NAME.match(name):
        raise InvalidInput(f"{where}.name", f"{name!r} must be 1-64 letters, digits, _ or -")
    where = f"{where} ({name})"
    _known_keys(raw, TOOL_KEYS, where)
    description = _text(raw, "description", where)
    parameters = _parameters(_list(raw, "parameters"), _at(where, "parameters"))
    environment = _string_map(_dict(raw, "environment"), _at(where, "environment"))
    if "script" in raw and "http" in raw:
        raise InvalidInput(f"{where}.http", "a tool has either script or http, not both")
    if "http" in raw:
        http = _http(raw["http"], f"{where}.http", default_timeout)
        return Tool(
            name, description, parameters, "", (), None, folder, http.timeout, environment, http
        )
    if "script" not in raw:
        raise InvalidInput(f"{where}.script", "is required (or http): what runs the tool")
    command, args, stdin, working_dir, timeout = _script(
        raw["script"], f"{where}.script", folder, default_timeout
    )
    return Tool(
        name, description, parameters, command, args, stdin, working_dir, timeout, environment
    )


def _script(
    value: Any, where: str, folder: Path, default_timeout: float
) -> tuple[str, tuple[str, ...], str | None, Path, float]:
    """A script section as (command, args, stdin, working_dir, timeout)."""
    script = _mapping(value, where)
    _known_keys(script, SCRIPT_KEYS, where)
    if "shell" in script:
        raise InvalidInput(
            f"{where}.shell",
            "is not supported: arguments pasted into a shell line can run commands; "
            "use command and args",
        )
    command = _text(script, "command", where)
    args = _list(script, "args")
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise InvalidInput(f"{where}.args", "must be a list of strings (quote numbers)")
    stdin = _optional_text(script, "stdin", where)
    working_dir = folder / (_optional_text(script, "working_dir", where) or ".")
    timeout = _timeout(script, where, default_timeout)
    return command, tuple(args), stdin, working_dir, timeout


def _http(value: Any, where: str, default_timeout: float) -> HttpRequest:
    http = _mapping(value, where)
    _known_keys(http, HTTP_KEYS, where)
    url = _text(http, "url", where)
    if not url.startswith(("http://", "https://")):
        raise InvalidInput(f"{where}.url", f"{url!r} is not an http:// or https:// URL")
    method = (_optional_text(http, "method", where) or "GET").upper()
    if method not in HTTP_METHODS:
        raise InvalidInput(f"{where}.method", f"{method!r} is not one of {', '.join(HTTP_METHODS)}")
    return HttpRequest(
        url=url,
        method=method,
        headers=_string_map(_dict(http, "headers"), f"{where}.headers"),
        body=_optional_text(http, "body", where),
        timeout=_timeout(http, where, default_timeout),
        extract_json=_optional_text(http, "extract_json", where),
    )


def _parameters(value: Any, where: str) -> tuple[Parameter, ...]:
    if not isinstance(value, list):
        raise InvalidInput(where, "must be a list of parameters")
    parameters: list[Parameter] = []
    for index, entry in enumerate(value):
        parameter = _parameter(entry, f"{where}[{index}]")
        if any(p.name == parameter.name for p in parameters):
            raise InvalidInput(f"{where}[{index}].name", f"{parameter.name!r} is used twice")
        parameters.append(parameter)
    return tuple(parameters)


def _parameter(entry: Any, where: str) -> Parameter:
    raw = _mapping(entry, where)
    _known_keys(raw, PARAMETER_KEYS, where)
    name = _text(raw, "name", where)
    if not PARAMETER_NAME.match(name):
        raise InvalidInput(f"{where}.name", f"{name!r} must be an identifier (letters, digits, _)")
    kind = _text(raw, "type", where)
    if kind not in PARAMETER_TYPES:
        raise InvalidInput(f"{where}.type", f"{kind!r} is not one of {', '.join(PARAMETER_TYPES)}")
    required = raw.get("required", False)
    if not isinstance(required, bool):
        raise InvalidInput(f"{where}.required", "must be true or false")
    default = None
    if raw.get("default") is not None:
        default = _scalar_text(raw["default"], f"{where}.default")
        _check_default(kind, default, f"{where}.default")
    description = _optional_text(raw, "description", where) or ""
    return Parameter(name, kind, description, required, default)


def _check_default(kind: str, text: str, where: str) -> None:
    checks = {
        "integer": lambda t: re.fullmatch(r"[+-]?\d+", t.strip()) is not None,
        "number": lambda t: _finite(t),
        "boolean": lambda t: t.strip().lower() in ("true", "false"),
    }
    check = checks.get(kind)
    if check is not None and not check(text):
        raise InvalidInput(where, f"{text!r} is not a valid {kind}")


def _finite(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _timeout(section: dict[str, Any], where: str, default: float) -> float:
    """A time limit: a number of seconds or a Go duration such as ``30s`` or ``1m30s``."""
    value = section.get("timeout")
    if value is None:
        return default
    seconds = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _duration(value.strip())
    if seconds is None or not 0 < seconds < math.inf:
        raise InvalidInput(f"{where}.timeout", f"{value!r} is not a positive duration like 30s")
    return seconds


def _duration(text: str) -> float | None:
    parts = DURATION_PART.findall(text)
    if not text or "".join(number + unit for number, unit in parts) != text:
        return None
    return sum(float(number) * DURATION_UNITS[unit] for number, unit in parts)


def _server(top: dict[str, Any], where: str) -> None:
    server = _mapping(_dict(top, "server"), f"{where}: server")
    _known_keys(server, ("port",), f"{where}: server")
    port = server.get("port", 3000)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise InvalidInput(f"{where}: server.port", "must be a port number")


# -- small readers ----------------------------------------------------------------------------


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(where, f"must be a mapping of keys to values, not {value!r:.40}")
    return value


def _at(where: str, key: str) -> str:
    """The path of a key below ``where``: ``file: key`` at the top, ``tools[0] (x).key`` below."""
    return f"{where}.{key}" if ": " in where else f"{where}: {key}"


def _known_keys(raw: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in raw:
        if key not in allowed:
            reason = f"is not a known key (expected one of {', '.join(allowed)})"
            raise InvalidInput(_at(where, str(key)), reason)


def _text(raw: dict[str, Any], key: str, where: str) -> str:
    """A required, non-empty string."""
    value = _optional_text(raw, key, where)
    if value is None:
        raise InvalidInput(_at(where, key), "is required")
    if not value.strip():
        raise InvalidInput(_at(where, key), "must not be empty")
    return value


def _optional_text(raw: dict[str, Any], key: str, where: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidInput(_at(where, key), f"must be a string, not {value!r:.40}")
    return value


def _list(raw: dict[str, Any], key: str) -> Any:
    """A list-valued key; absent or empty (``key:`` with nothing) is an empty list."""
    value = raw.get(key)
    return [] if value is None else value


def _dict(raw: dict[str, Any], key: str) -> Any:
    value = raw.get(key)
    return {} if value is None else value


def _scalar_text(value: Any, where: str) -> str:
    """A scalar as the text Go's YAML decoder would give a string field."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise InvalidInput(where, "must be a string, number or boolean")


def _string_map(value: Any, where: str) -> dict[str, str]:
    mapping = _mapping(value, where)
    return {str(key): _scalar_text(item, f"{where}.{key}") for key, item in mapping.items()}


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return f"{problem} at line {mark.line + 1}" if mark is not None else str(problem)
