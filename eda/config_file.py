"""Configuration files: YAML read safely with its line numbers, checked by pydantic models.

The routes file, the agents file, gantz.yaml and the webhook type map are all
read here, so a mistake in any of them is told the same way: the file, the
line, the entry (with its name) and the field, then why::

    tasks/routes.yaml:12: routes[3] (CustomerAgent).retry.max_retries: must be >= 0

Each file's shape is a set of :class:`ConfigModel` classes beside its reader.
Validation is strict (``'yes'`` is not a boolean, ``5`` is not a string), a
key given twice is refused, and a key no model declares is refused by name.
Checks that need the world (is this handler known? does this tool exist?)
are validators that read the ``context`` handed to :func:`validate`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Protocol, TypeVar

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from eda.errors import InvalidInput
from eda.retry import RetryOverride

#: A place in a document: mapping keys and list indexes, from the top.
Location = tuple[str | int, ...]
T = TypeVar("T")
#: pydantic error types and how this project says them (``{...}`` from the error's context).
MESSAGES = {
    "missing": "is required",
    "int_type": "must be a whole number, not {input}",
    "float_type": "must be a number, not {input}",
    "bool_type": "must be true or false, not {input}",
    "string_type": "must be a string, not {input}",
    "list_type": "must be a list, not {input}",
    "tuple_type": "must be a list, not {input}",
    "dict_type": "must be a mapping of keys to values, not {input}",
    "model_type": "must be a mapping of keys to values, not {input}",
    "model_attributes_type": "must be a mapping of keys to values, not {input}",
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "too_short": "must not be empty",
    "literal_error": "must be one of {expected}",
    "extra_forbidden": "is not a known key",
}


class ConfigModel(BaseModel):
    """Base of a configuration file's models: frozen, and unknown keys refused by name.

    ``refused`` maps keys that once were valid to what to do instead.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    refused: ClassVar[Mapping[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        allowed = [info.alias or name for name, info in cls.model_fields.items()]
        for key in value:
            if key in cls.refused:
                raise problem(cls.refused[key], key)
            if key not in allowed:
                raise problem(f"is not a known key (expected one of {', '.join(allowed)})", key)
        return value


def problem(reason: str, *at: str | int) -> PydanticCustomError:
    """An error for a validator to raise; ``at`` continues the location below the value checked."""
    return PydanticCustomError("config", "{reason}", {"reason": reason, "at": at})


def _retry_keys(value: Any) -> Any:
    """Unknown keys of ``retry:`` refused by name; its lists as the tuples strict mode wants."""
    if not isinstance(value, dict):
        return value
    allowed = list(RetryOverride.model_fields)
    for key in value:
        if key not in allowed:
            raise problem(f"is not a known key (expected one of {', '.join(allowed)})", key)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}


#: The ``retry:`` mapping of a route or an agent (see eda/retry.py), or None.
RetryField = Annotated[RetryOverride | None, BeforeValidator(_retry_keys)]


def given(info: ValidationInfo, name: str) -> Any:
    """What the reader handed :func:`validate` as ``context[name]``, for a validator."""
    context = info.context or {}
    if name not in context:
        raise TypeError(f"validate() was not given {name!r} in its context")
    return context[name]


class Named(Protocol):
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=Named)


def unique_names(entries: list[N]) -> list[N]:
    """``entries`` when no two share a name; else an error at the later one's ``name``."""
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        if entry.name in seen:
            raise problem(f"{entry.name!r} is used twice", index, "name")
        seen.add(entry.name)
    return entries


@dataclass(frozen=True)
class Document:
    """A YAML file's data, and the line each of its keys and list items is on."""

    path: Path
    data: Any
    lines: dict[Location, int] = field(default_factory=dict)

    def line(self, at: Location) -> int:
        """The line of ``at``, or of the nearest enclosing place that has one."""
        for end in range(len(at), -1, -1):
            if at[:end] in self.lines:
                return self.lines[at[:end]]
        return 1

    def where(self, at: Location, label_keys: tuple[str, ...] = ("name",)) -> str:
        """``file:line: entry[i] (its name).field`` for a place in the document."""
        text, value = "", self.data
        for part in at:
            if isinstance(part, int):
                text += f"[{part}]"
            else:
                text += f".{part}" if text else str(part)
            value = _child(value, part)
            label = _label(value, label_keys) if isinstance(part, int) else None
            if label:
                text += f" ({label})"
        head = f"{self.path}:{self.line(at)}"
        return f"{head}: {text}" if text else head

    def error(
        self, at: Location, reason: str, label_keys: tuple[str, ...] = ("name",)
    ) -> InvalidInput:
        return InvalidInput(self.where(at, label_keys), reason)


def read_yaml(path: Path, *, transform: Callable[[str], str] | None = None) -> Document:
    """Read a YAML file safely, keeping lines; ``transform`` rewrites its text first.

    Raises InvalidInput naming the file (and the line) when it cannot be read,
    is not YAML, or gives a key twice.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(str(path), f"cannot be read: {exc.strerror or exc}") from None
    loader = yaml.SafeLoader(transform(text) if transform else text)
    lines: dict[Location, int] = {}
    try:
        node = loader.get_single_node()
        data = _construct(loader, node, (), lines) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise InvalidInput(where, f"is not valid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise InvalidInput(str(path), f"is not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    return Document(Path(path), data, lines)


def validate(
    document: Document,
    shape: type[T],
    *,
    context: Mapping[str, Any] | None = None,
    label_keys: tuple[str, ...] = ("name",),
) -> T:
    """The document checked against ``shape``; the first mistake as InvalidInput.

    A list item that is a mapping is named by the first of ``label_keys`` it has.
    """
    try:
        return TypeAdapter(shape).validate_python(
            document.data, strict=True, context=dict(context or {})
        )
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        at, reason = _located(error)
        raise document.error(at, reason, label_keys) from None


def _located(error: Any) -> tuple[Location, str]:
    context = error.get("ctx") or {}
    at = (*error["loc"], *context.get("at", ()))
    if error["type"] == "config":
        return at, context["reason"]
    if error["type"] == "value_error":
        return at, str(context.get("error", error["msg"]))
    template = MESSAGES.get(error["type"])
    if template is None:
        return at, error["msg"]
    return at, template.format(**{**context, "input": _shown(error.get("input"))})


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _construct(
    loader: yaml.SafeLoader, node: yaml.Node, at: Location, lines: dict[Location, int]
) -> Any:
    lines.setdefault(at, node.start_mark.line + 1)
    if isinstance(node, yaml.SequenceNode):
        return [
            _construct(loader, item, (*at, index), lines) for index, item in enumerate(node.value)
        ]
    if not isinstance(node, yaml.MappingNode):
        return loader.construct_object(node, deep=True)
    written: set[Any] = set()
    for key_node, _ in node.value:  # keys written here; merged ones (<<) may be overridden
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, Hashable) and key in written:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice", key_node.start_mark
            )
        written.add(key if isinstance(key, Hashable) else id(key))
    loader.flatten_mapping(node)  # merge keys (<<) in, as safe_load does
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str | int) or isinstance(key, bool):
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is not text (quote it)", key_node.start_mark
            )
        lines[(*at, key)] = key_node.start_mark.line + 1
        mapping[key] = _construct(loader, value_node, (*at, key), lines)
    return mapping


def _child(value: Any, part: str | int) -> Any:
    if isinstance(value, dict):
        return value.get(part)
    if isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
        return value[part]
    return None


def _label(value: Any, label_keys: tuple[str, ...]) -> str | None:
    if not isinstance(value, dict):
        return None
    return next((value[k] for k in label_keys if isinstance(value.get(k), str)), None)
