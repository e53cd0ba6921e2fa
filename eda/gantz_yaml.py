"""Reading gantz.yaml strictly, with errors that name the file, the tool and the key.

The schema is Gantz's: top-level ``name``, ``description``, ``version``,
``server``, ``tools[]``; a tool has ``name``, ``description``, ``parameters[]``
(``name``, ``type``, ``description``, ``required``, ``default``),
``environment`` and exactly one of ``script`` (``command``, ``args``,
``working_dir``, ``timeout``) or ``http`` (``method``, ``url``, ``headers``,
``body``, ``timeout``, ``extract_json``). ``script.stdin`` is ours (Gantz
ignores it). ``${VAR}`` and ``$VAR`` are expanded across the file before it is
parsed (an unset variable becomes empty), as Gantz does. Where Gantz quietly
ignores a mistake (an unknown key, a bad timeout), this reader refuses it, in
the one format of :mod:`eda.config_file`:
``gantz.yaml:40: tools[2] (get_events).parameters[0] (limit).type: 'int' is not one of ...``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BeforeValidator,
    PlainValidator,
    field_validator,
    model_validator,
)

from eda.config_file import ConfigModel, problem, read_yaml, unique_names, validate
from eda.settings import Settings, environ
from eda.tools import PARAMETER_TYPES, HttpRequest, Parameter, Tool

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
#: Settings gantz.yaml may name, with their defaults (the file works with them unset).
VARIABLE_DEFAULTS = {"EDA_GITHUB_API_URL": str(Settings.model_fields["github_api_url"].default)}
#: Gantz's time limit when a tool sets none, in seconds.
DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class GantzFile:
    """A whole gantz.yaml: the server's name and version, and its tools by name."""

    name: str
    version: str
    description: str
    tools: dict[str, Tool]


def read_gantz_file(path: Path, *, default_timeout: float | None = None) -> GantzFile:
    """Read, expand and validate a gantz.yaml; InvalidInput names the file, line, tool and key."""
    document = read_yaml(path, transform=expand_variables)
    top = validate(document, GantzDocument)
    timeout = default_timeout if default_timeout is not None else DEFAULT_TIMEOUT
    folder = Path(path).resolve().parent
    return GantzFile(
        name=top.name or "gantz",
        version=top.version or "1.0.0",
        description=top.description or "",
        tools={entry.name: entry.tool(folder, timeout) for entry in top.tools},
    )


def expand_variables(text: str) -> str:
    """Expand ``${NAME}`` and ``$NAME`` from the environment; unset ones become empty, but
    for the settings of :data:`VARIABLE_DEFAULTS`, which take their default."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return environ(name) or VARIABLE_DEFAULTS.get(name, "")

    return VARIABLE.sub(value, text)


# -- values ------------------------------------------------------------------------------------


def _filled(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _scalar_text(value: Any) -> str:
    """A scalar as the text Go's YAML decoder would give a string field."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise ValueError("must be a string, number or boolean")


def _string_map(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping of keys to values, not {value!r:.40}")
    mapping = {}
    for key, item in value.items():
        try:
            mapping[str(key)] = _scalar_text(item)
        except ValueError as exc:
            raise problem(str(exc), key) from None
    return mapping


def _timeout(value: Any) -> float | None:
    """A time limit: a number of seconds or a Go duration such as ``30s`` or ``1m30s``."""
    if value is None:
        return None
    seconds = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _duration(value.strip())
    if seconds is None or not 0 < seconds < math.inf:
        raise ValueError(f"{value!r} is not a positive duration like 30s")
    return seconds


def _duration(text: str) -> float | None:
    parts = DURATION_PART.findall(text)
    if not text or "".join(number + unit for number, unit in parts) != text:
        return None
    return sum(float(number) * DURATION_UNITS[unit] for number, unit in parts)


def _args(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError("must be a list of strings (quote numbers)")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise problem(f"must be a string (quote numbers), not {item!r:.40}", index)
    return tuple(value)


def _none_as_empty_list(value: Any) -> Any:
    return [] if value is None else value


#: A required string that is not blank.
Filled = Annotated[str, AfterValidator(_filled)]
#: A scalar read as text (``version: 1.0`` is ``"1.0"``).
Text = Annotated[str, PlainValidator(_scalar_text)]
StringMap = Annotated[dict[str, str], PlainValidator(_string_map)]
Timeout = Annotated[float | None, PlainValidator(_timeout)]
#: A list that may be left empty (``parameters:`` with nothing after it).
Listed = BeforeValidator(_none_as_empty_list)


# -- the file's shape --------------------------------------------------------------------------


class ScriptSection(ConfigModel):
    """``script:``: the command a tool runs, without a shell."""

    refused: ClassVar[dict[str, str]] = {
        "shell": "is not supported: arguments pasted into a shell line can run commands; "
        "use command and args"
    }

    command: Filled
    args: Annotated[tuple[str, ...], PlainValidator(_args)] = ()
    stdin: str | None = None
    working_dir: str | None = None
    timeout: Timeout = None


class HttpSection(ConfigModel):
    """``http:``: the request a tool sends."""

    method: str | None = None
    url: Filled
    headers: StringMap = {}
    body: str | None = None
    timeout: Timeout = None
    extract_json: str | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return url

    @field_validator("method")
    @classmethod
    def _known_method(cls, method: str | None) -> str:
        method = (method or "GET").upper()
        if method not in HTTP_METHODS:
            raise ValueError(f"{method!r} is not one of {', '.join(HTTP_METHODS)}")
        return method

    def request(self, default_timeout: float) -> HttpRequest:
        return HttpRequest(
            url=self.url,
            method=self.method or "GET",
            headers=self.headers,
            body=self.body,
            timeout=self.timeout or default_timeout,
            extract_json=self.extract_json,
        )


class ParameterEntry(ConfigModel):
    """One parameter of a tool."""

    name: Filled
    type: Filled
    description: str | None = None
    required: bool = False
    default: Text | None = None

    @field_validator("name")
    @classmethod
    def _identifier(cls, name: str) -> str:
        if not PARAMETER_NAME.match(name):
            raise ValueError(f"{name!r} must be an identifier (letters, digits, _)")
        return name

    @field_validator("type")
    @classmethod
    def _known_type(cls, kind: str) -> str:
        if kind not in PARAMETER_TYPES:
            raise ValueError(f"{kind!r} is not one of {', '.join(PARAMETER_TYPES)}")
        return kind

    @model_validator(mode="after")
    def _default_of_its_type(self) -> ParameterEntry:
        if self.default is not None and not _valid_default(self.type, self.default):
            raise problem(f"{self.default!r} is not a valid {self.type}", "default")
        return self

    def parameter(self) -> Parameter:
        return Parameter(self.name, self.type, self.description or "", self.required, self.default)


def _valid_default(kind: str, text: str) -> bool:
    if kind == "integer":
        return re.fullmatch(r"[+-]?\d+", text.strip()) is not None
    if kind == "number":
        try:
            return math.isfinite(float(text))
        except ValueError:
            return False
    if kind == "boolean":
        return text.strip().lower() in ("true", "false")
    return True


class ToolEntry(ConfigModel):
    """One tool: what the model sees, and exactly one of ``script`` or ``http``."""

    name: Filled
    description: Filled
    parameters: Annotated[list[ParameterEntry], Listed] = []
    environment: StringMap = {}
    script: ScriptSection | None = None
    http: HttpSection | None = None

    @field_validator("name")
    @classmethod
    def _tool_name(cls, name: str) -> str:
        if not TOOL_NAME.match(name):
            raise ValueError(f"{name!r} must be 1-64 letters, digits, _ or -")
        return name

    @field_validator("parameters")
    @classmethod
    def _parameter_names(cls, parameters: list[ParameterEntry]) -> list[ParameterEntry]:
        return unique_names(parameters)

    @model_validator(mode="after")
    def _script_or_http(self) -> ToolEntry:
        if self.script is not None and self.http is not None:
            raise problem("a tool has either script or http, not both", "http")
        if self.script is None and self.http is None:
            raise problem("is required (or http): what runs the tool", "script")
        return self

    def tool(self, folder: Path, default_timeout: float) -> Tool:
        common: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "parameters": tuple(p.parameter() for p in self.parameters),
            "environment": self.environment,
        }
        if self.http is not None:
            http = self.http.request(default_timeout)
            return Tool(
                **common,
                command="",
                args=(),
                stdin=None,
                working_dir=folder,
                timeout=http.timeout,
                http=http,
            )
        script = self.script or ScriptSection(command="")  # one of the two: _script_or_http
        return Tool(
            **common,
            command=script.command,
            args=script.args,
            stdin=script.stdin,
            working_dir=folder / (script.working_dir or "."),
            timeout=script.timeout or default_timeout,
        )


class ServerSection(ConfigModel):
    """``server:``: what Gantz listens on."""

    port: int = 3000

    @field_validator("port")
    @classmethod
    def _port(cls, port: int) -> int:
        if not 0 < port < 65536:
            raise ValueError("must be a port number")
        return port


class GantzDocument(ConfigModel):
    """A whole gantz.yaml."""

    name: str | None = None
    description: str | None = None
    version: Text | None = None
    server: Annotated[ServerSection, BeforeValidator(lambda v: {} if v is None else v)] = (
        ServerSection()
    )
    tools: list[ToolEntry]

    @field_validator("tools")
    @classmethod
    def _tool_names(cls, tools: list[ToolEntry]) -> list[ToolEntry]:
        return unique_names(tools)
