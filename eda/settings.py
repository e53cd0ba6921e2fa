"""The one typed settings object, built from the environment.

Nothing else in the project reads ``os.environ``: every face (webhooks, tasks,
agents, scripts) asks for :func:`load` and passes the object on. Every variable
is listed in the README's configuration table.

Secrets (webhook signing secrets, CloudEvents senders' tokens, the admin and MCP
bearer tokens, the trace exporter's headers) are settings
too, held as :class:`~pydantic.SecretStr`: ``repr``, ``str`` and ``model_dump``
show ``**********``, and only the code that compares one calls
``get_secret_value()``. They are read once, here, and checked at start.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from eda.errors import InvalidInput
from eda.flow import ModelPrice

#: The repository root: defaults (data folder, routes, agents, gantz.yaml) live under it.
ROOT = Path(__file__).resolve().parent.parent

#: Environment variable -> settings field, for the scalar settings.
ENVIRONMENT: dict[str, str] = {
    "REDIS_URL": "redis_url",
    "EDA_DATA_DIR": "data_dir",
    "EDA_PREFIX": "prefix",
    "EDA_MAX_PAYLOAD_BYTES": "max_payload_bytes",
    "EDA_STREAM_MAXLEN": "stream_maxlen",
    "EDA_DEDUPE_TTL": "dedupe_ttl",
    "CELERY_BROKER_URL": "broker_url",
    "EDA_ROUTES": "routes_path",
    "EDA_AGENTS": "agents_path",
    "EDA_GANTZ_YAML": "gantz_path",
    "EDA_RETRY_BACKOFF": "retry_backoff",
    "EDA_RETRY_BACKOFF_MAX": "retry_backoff_max",
    "EDA_RETRY_HOLD_MAX": "retry_hold_max",
    "EDA_MAX_RETRIES": "max_retries",
    "EDA_MAX_ATTEMPTS_KEPT": "max_attempts_kept",
    "EDA_MAX_RUNS_KEPT": "max_runs_kept",
    "EDA_TASK_SOFT_TIME_LIMIT": "task_soft_time_limit",
    "EDA_TASK_TIME_LIMIT": "task_time_limit",
    "EDA_VISIBILITY_TIMEOUT": "visibility_timeout",
    "EDA_OUTBOX_GRACE": "outbox_grace",
    "EDA_SWEEP_INTERVAL": "sweep_interval",
    "EDA_RECOVERY_GRACE": "recovery_grace",
    "EDA_HEARTBEAT_INTERVAL": "heartbeat_interval",
    "EDA_METRICS_DIR": "metrics_dir",
    "EDA_WORKER_METRICS_PORT": "worker_metrics_port",
    "EDA_WORKER_METRICS_HOST": "worker_metrics_host",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "otel_endpoint",
    "OTEL_EXPORTER_OTLP_HEADERS": "otel_headers",
    "OTEL_SERVICE_NAME": "otel_service_name",
    "EDA_STORE_WAIT": "store_wait",
    "EDA_FLOW_LEASE": "flow_lease",
    "EDA_FLOWER_WORKER_WAIT": "flower_worker_wait",
    "EDA_REPLAY_RATE": "replay_rate",
    "EDA_TOOL_TIMEOUT": "tool_timeout",
    "EDA_TOOL_MAX_OUTPUT_BYTES": "tool_max_output_bytes",
    "EDA_JOURNAL_MAX_BYTES": "journal_max_bytes",
    "EDA_MAX_CAUSATION_DEPTH": "max_causation_depth",
    "EDA_CHAIN_BUDGET": "chain_budget",
    "EDA_MCP_HOST": "mcp_host",
    "EDA_MCP_PORT": "mcp_port",
    "EDA_MCP_ALLOWED_HOSTS": "mcp_allowed_hosts",
    "EDA_WEBHOOK_MAX_BODY_BYTES": "webhook_max_body_bytes",
    "EDA_ALLOW_UNSIGNED": "allow_unsigned",
    "EDA_WEBHOOK_TYPES": "webhook_types_path",
    "EDA_CLOUDEVENTS_ALLOWED_ORIGINS": "cloudevents_allowed_origins",
    "EDA_SIGNATURE_TOLERANCE": "signature_tolerance",
    "EDA_HANDLER_MODULES": "handler_modules",
    "EDA_LOG_LEVEL": "log_level",
    "EDA_LOG_FORMAT": "log_format",
    "EDA_AGENT_MODEL": "agent_model",
    "EDA_MODEL_PRICES": "model_prices",
    "EDA_ADMIN_TOKEN": "admin_token",
    "EDA_MCP_TOKEN": "mcp_token",
    "EDA_DESTINATION_ALLOWED_NETWORKS": "destination_allowed_networks",
    "EDA_GITHUB_API_URL": "github_api_url",
    "EDA_TRIAGE": "triage",
    "EDA_TRIAGE_INTERVAL": "triage_interval",
    "EDA_TRIAGE_THRESHOLD": "triage_threshold",
    "EDA_TRIAGE_MAX_RETRIES": "triage_max_retries",
    "EDA_TRIAGE_DRY_RUN": "triage_dry_run",
}
#: ``EDA_DESTINATION_SECRET_<NAME>``: a destination's signing secret, or a URL that is one.
DESTINATION_SECRET_PREFIX = "EDA_DESTINATION_SECRET_"  # noqa: S105 (a name, not a secret)
#: Signing secrets of the senders with a variable of their own -> their source name.
PROVIDER_SECRETS: dict[str, str] = {
    "GITHUB_WEBHOOK_SECRET": "github",
    "STRIPE_WEBHOOK_SECRET": "stripe",
    "SLACK_SIGNING_SECRET": "slack",
}
#: ``EDA_WEBHOOK_SECRET_<SOURCE>``: the Standard Webhooks secret of ``/webhooks/<source>``.
WEBHOOK_SECRET_PREFIX = "EDA_WEBHOOK_SECRET_"  # noqa: S105 (a name, not a secret)
#: ``EDA_EVENTS_TOKEN_<SENDER>``: the token (bearer or ``X-Api-Key``) of one CloudEvents sender.
EVENTS_TOKEN_PREFIX = "EDA_EVENTS_TOKEN_"  # noqa: S105 (a name, not a secret)
#: A source name in ``/webhooks/<source>``: it becomes the first word of event types.
SOURCE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
#: What ``EDA_MODEL_PRICES`` holds, for its errors.
PRICES_SHAPE = (
    'a JSON object of model name -> {"input": USD, "output": USD} per million tokens '
    '(optionally "cache_write" and "cache_read")'
)
#: Shortest bearer token accepted (admin API, MCP over HTTP): a guessable one protects nothing.
MIN_TOKEN_LENGTH = 16


class Settings(BaseModel):
    """Everything an operator can set, with defaults that work on a laptop."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Redis holding the event store; unset means "start the embedded one".
    redis_url: str | None = None
    #: Where the embedded Redis keeps its append-only file (ignored by git).
    data_dir: Path = ROOT / ".data"
    #: Every Redis key starts with this, so deployments can share a server.
    prefix: str = Field(default="eda", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    #: Largest accepted event payload, in bytes of JSON.
    max_payload_bytes: int = Field(default=1024 * 1024, gt=0)
    #: Approximate length the event streams are trimmed to (retention).
    stream_maxlen: int = Field(default=100_000, gt=0)
    #: How long a dedupe key (a sender's delivery id) is remembered, in seconds.
    dedupe_ttl: int = Field(default=7 * 24 * 3600, gt=0)
    #: Celery broker; unset means the event store's Redis.
    broker_url: str | None = None
    routes_path: Path = ROOT / "tasks" / "routes.yaml"
    agents_path: Path = ROOT / "agents" / "agents.yaml"
    gantz_path: Path = ROOT / "gantz.yaml"
    #: Retry policy of handler deliveries: exponential backoff with full jitter.
    retry_backoff: float = Field(default=2.0, gt=0)
    retry_backoff_max: float = Field(default=600.0, gt=0)
    #: A retry (or flow-control wait) longer than this waits in the store, not as a
    #: countdown message that Celery holds in a worker's memory until it is due.
    retry_hold_max: float = Field(default=10.0, ge=0)
    max_retries: int = Field(default=5, ge=0)
    #: Attempts kept per run of a delivery, and runs (dispatch, replays, retries) kept per
    #: delivery; the oldest go first, counted.
    max_attempts_kept: int = Field(default=20, ge=1, le=1000)
    max_runs_kept: int = Field(default=10, ge=1, le=1000)
    task_soft_time_limit: float = Field(default=240.0, gt=0)
    task_time_limit: float = Field(default=300.0, gt=0)
    #: Seconds an unacknowledged broker message waits before it is delivered again.
    visibility_timeout: float = Field(default=3600.0, gt=0)
    #: A stored event still pending after this many seconds is dispatched by the sweeper.
    outbox_grace: float = Field(default=30.0, ge=0)
    sweep_interval: float = Field(default=15.0, gt=0)
    #: A delivery queued, running or retrying this long with no message and no live
    #: worker holding it is sent again by the sweep, under a new task id.
    recovery_grace: float = Field(default=30.0, ge=0)
    #: Seconds between a worker's (or relay's) heartbeats; three missed and it is gone.
    heartbeat_interval: float = Field(default=5.0, gt=0)
    #: Where the processes' Prometheus counts are kept between scrapes (multiprocess mode);
    #: unset: ``metrics`` under the data folder.
    metrics_dir: Path | None = None
    #: A worker serves ``/metrics`` on this port (0: off); protected by ``EDA_ADMIN_TOKEN``
    #: when its host is not loopback.
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)
    worker_metrics_host: str = Field(default="127.0.0.1", min_length=1)
    #: Traces are exported over OTLP/HTTP to this base URL (``/v1/traces`` is added); unset:
    #: no tracing at all. The standard OpenTelemetry variables name it and the rest.
    otel_endpoint: str | None = None
    #: ``key=value,...`` headers of each export (an authorization, so a secret).
    otel_headers: SecretStr | None = None
    otel_service_name: str = Field(default="eda", min_length=1)
    #: Seconds a delivery waits, at each of its steps, for a store that does not answer.
    store_wait: float = Field(default=60.0, ge=0)
    #: Seconds a concurrency slot is held at most: a killed worker's comes back after it.
    flow_lease: float = Field(default=300.0, gt=0)
    #: Seconds Flower waits for a worker to answer before it starts (it lists the workers
    #: it finds as it starts, and finds more only when asked to refresh).
    flower_worker_wait: float = Field(default=30.0, ge=0)
    #: Replay and retry-all enqueue at most this many deliveries a second.
    replay_rate: float = Field(default=200.0, gt=0)
    #: Default time limit of a gantz.yaml tool's script, in seconds.
    tool_timeout: float = Field(default=30.0, gt=0)
    #: Most bytes of a tool script's output (stdout and stderr each) read; the script is
    #: stopped past it.
    tool_max_output_bytes: int = Field(default=1024 * 1024, ge=1024)
    #: Most bytes of JSON one agent run's journal holds (model responses, tool results);
    #: a run that would pass it stops (``journal_limit``).
    journal_max_bytes: int = Field(default=4 * 1024 * 1024, ge=4096)
    #: Events an event may have above it in its causation chain; a deeper one is stored
    #: ``blocked``, not dispatched.
    max_causation_depth: int = Field(default=8, ge=1)
    #: Events one chain (a correlation id) may hold; past it they are stored ``blocked``.
    chain_budget: int = Field(default=100, ge=1)
    #: Where the built-in MCP server listens with ``--transport http`` (loopback by default).
    mcp_host: str = Field(default="127.0.0.1", min_length=1)
    mcp_port: int = Field(default=8765, ge=1, le=65535)
    #: Host names MCP over HTTP answers to besides its listening address (comma-separated).
    mcp_allowed_hosts: tuple[str, ...] = ()
    #: Largest request body the HTTP app reads, in bytes (larger ones get 413).
    webhook_max_body_bytes: int = Field(default=5 * 1024 * 1024, gt=0)
    #: Development only: accept webhooks from sources that have no secret configured.
    allow_unsigned: bool = False
    #: A YAML file whose webhook type mappings override the built-in ones.
    webhook_types_path: Path | None = None
    #: How far a signed webhook's timestamp may be from now, in seconds.
    signature_tolerance: float = Field(default=300.0, gt=0)
    log_level: str = Field(default="INFO", pattern=r"^(?i:debug|info|warning|error)$")
    #: ``json`` (one object a line), ``text`` (key=value), or ``auto`` (text on a terminal).
    log_format: str = Field(default="auto", pattern=r"^(json|text|auto)$")
    #: Modules imported by every process to register handlers (comma-separated).
    handler_modules: tuple[str, ...] = ()
    #: The model an agent uses when agents.yaml names none for it.
    agent_model: str = Field(default="claude-sonnet-5-5", min_length=1)
    #: Model name -> USD per million tokens (``input``, ``output``, optionally ``cache_write``
    #: and ``cache_read``): what an agent's ``budget: {cost_per_day}`` is counted in.
    model_prices: dict[str, ModelPrice] = Field(default_factory=dict)
    #: Signing secrets by source name: github, stripe, slack from their own variables, any
    #: other source (``events`` for ``/events``) from ``EDA_WEBHOOK_SECRET_<SOURCE>``.
    webhook_secrets: dict[str, SecretStr] = Field(default_factory=dict)
    #: Tokens of CloudEvents senders by sender name, from ``EDA_EVENTS_TOKEN_<SENDER>``:
    #: ``POST /events`` takes one as ``Authorization: Bearer`` or ``X-Api-Key``.
    events_tokens: dict[str, SecretStr] = Field(default_factory=dict)
    #: Origins the CloudEvents abuse-protection handshake (``OPTIONS /events``) allows;
    #: ``*`` allows any (comma-separated; unset: none).
    cloudevents_allowed_origins: tuple[str, ...] = ()
    #: Bearer token of the admin API; unset, the admin API is off (403).
    admin_token: SecretStr | None = None
    #: Bearer token of MCP over HTTP; unset, ``eda mcp`` listens on loopback only.
    mcp_token: SecretStr | None = None
    #: Destinations' secrets by variable name (``EDA_DESTINATION_SECRET_<NAME>``): signing
    #: secrets, and URLs that are secrets themselves (a Slack incoming webhook's).
    destination_secrets: dict[str, SecretStr] = Field(default_factory=dict)
    #: Networks (CIDR, comma-separated) destinations may reach although they are not public:
    #: by default only public addresses are (no loopback, private, link-local or metadata).
    destination_allowed_networks: tuple[str, ...] = ()
    #: The GitHub REST API that gantz.yaml's GitHub tools call (GitHub Enterprise:
    #: ``https://HOST/api/v3``).
    github_api_url: str = Field(default="https://api.github.com", pattern=r"^https?://\S+$")
    #: The dead-letter triage agent runs (beat's schedule and the pile-up check).
    triage: bool = False
    #: Seconds between two scheduled triage runs.
    triage_interval: float = Field(default=3600.0, gt=0)
    #: Dead letters that start a triage run before its time (checked at every sweep); 0: never.
    triage_threshold: int = Field(default=0, ge=0)
    #: Dead letters one triage run may retry at most.
    triage_max_retries: int = Field(default=10, ge=0, le=1000)
    #: Triage records what it would do, and retries and annotates nothing.
    triage_dry_run: bool = False

    @field_validator(
        "handler_modules",
        "mcp_allowed_hosts",
        "cloudevents_allowed_origins",
        "destination_allowed_networks",
        mode="before",
    )
    @classmethod
    def _split_modules(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator(
        "redis_url",
        "broker_url",
        "webhook_types_path",
        "metrics_dir",
        "otel_endpoint",
        "otel_headers",
        "admin_token",
        "mcp_token",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("model_prices", mode="before")
    @classmethod
    def _prices(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as exc:
                raise PydanticCustomError(
                    "json",
                    "is not JSON ({why} at column {column})",
                    {"why": exc.msg, "column": exc.colno},
                ) from None
        if not isinstance(value, dict):
            raise PydanticCustomError("prices", PRICES_SHAPE)
        for model, price in value.items():
            if isinstance(price, ModelPrice):
                continue
            try:
                ModelPrice.model_validate(price)
            except ValidationError as exc:
                error = exc.errors()[0]
                where = ".".join(str(part) for part in (model, *error["loc"]))
                raise PydanticCustomError(
                    "price",
                    "{where}: {why} ({shape})",
                    {"where": where, "why": error["msg"], "shape": PRICES_SHAPE},
                ) from None
        return value

    @field_validator("destination_allowed_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for text in value:
            try:
                ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise PydanticCustomError(
                    "network", "{text!r} is not a network such as 10.0.0.0/8", {"text": text}
                ) from None
        return value

    @field_validator("admin_token", "mcp_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _check_token_length(value)
        return value

    @field_validator("events_tokens")
    @classmethod
    def _tokens_long_enough(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for token in value.values():
            _check_token_length(token)
        return value

    @property
    def metrics_folder(self) -> Path:
        """Where the Prometheus counts are kept: ``metrics_dir``, or ``metrics`` in the data."""
        return self.metrics_dir if self.metrics_dir is not None else self.data_dir / "metrics"

    def events_token(self, sender: str) -> str | None:
        """The token of CloudEvents sender ``sender`` in clear, or None when none is set."""
        token = self.events_tokens.get(sender)
        return token.get_secret_value() if token is not None else None

    def webhook_secret(self, source: str) -> str | None:
        """The signing secret of ``/webhooks/<source>`` in clear, or None when none is set."""
        secret = self.webhook_secrets.get(source)
        return secret.get_secret_value() if secret is not None else None

    def destination_secret(self, variable: str) -> str | None:
        """A destination's secret (``EDA_DESTINATION_SECRET_<NAME>``) in clear, or None."""
        secret = self.destination_secrets.get(variable)
        return secret.get_secret_value() if secret is not None else None


def _too_short(length: int) -> str | None:
    """Why a token of ``length`` characters is refused, or None when it is long enough."""
    if length >= MIN_TOKEN_LENGTH:
        return None
    return (
        f"is {length} characters; use at least {MIN_TOKEN_LENGTH} random ones "
        "(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
    )


def _check_token_length(token: SecretStr) -> None:
    problem = _too_short(len(token.get_secret_value()))
    if problem is not None:
        raise PydanticCustomError("token_too_short", problem)


def load(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build the settings from the environment (``os.environ`` by default).

    Raises InvalidInput naming the variable when a value does not parse.
    """
    env = os.environ if environ is None else environ
    values: dict[str, object] = {
        field: env[name] for name, field in ENVIRONMENT.items() if name in env
    }
    values["webhook_secrets"] = webhook_secrets(env)
    values["events_tokens"] = events_tokens(env)
    values["destination_secrets"] = {
        name: value
        for name, value in env.items()
        if name.startswith(DESTINATION_SECRET_PREFIX) and value
    }
    values.update(overrides)
    try:
        return Settings(**values)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors()[0]
        # The message never carries the value: it may be a secret.
        raise InvalidInput(_variable(error["loc"]), error["msg"]) from None


def webhook_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """Signing secrets by source name, from the providers' variables and ``EDA_WEBHOOK_SECRET_*``.

    An empty variable counts as unset. ``EDA_WEBHOOK_SECRET_GITHUB`` (and the other
    providers') is refused: those senders sign with a scheme and variable of their own.
    """
    found = {source: env[name] for name, source in PROVIDER_SECRETS.items() if env.get(name)}
    for name, value in env.items():
        if not name.startswith(WEBHOOK_SECRET_PREFIX) or not value:
            continue
        source = name[len(WEBHOOK_SECRET_PREFIX) :].lower()
        if source in PROVIDER_SECRETS.values():
            own = next(n for n, s in PROVIDER_SECRETS.items() if s == source)
            raise InvalidInput(name, f"{source} signs with its own scheme: set {own} instead")
        if not SOURCE_NAME.match(source):
            raise InvalidInput(
                name,
                "names no source: a source name is lower-case letters, digits and _ (at most 32)",
            )
        found[source] = value
    return found


def events_tokens(env: Mapping[str, str]) -> dict[str, str]:
    """CloudEvents senders' tokens by sender name, from ``EDA_EVENTS_TOKEN_<SENDER>``.

    An empty variable counts as unset; a sender's name follows the rule of source names.
    """
    found: dict[str, str] = {}
    for name, value in env.items():
        if not name.startswith(EVENTS_TOKEN_PREFIX) or not value:
            continue
        sender = name[len(EVENTS_TOKEN_PREFIX) :].lower()
        if not SOURCE_NAME.match(sender):
            raise InvalidInput(
                name,
                "names no sender: a sender name is lower-case letters, digits and _ (at most 32)",
            )
        problem = _too_short(len(value))
        if problem is not None:
            raise InvalidInput(name, problem)
        found[sender] = value
    return found


def _variable(loc: tuple[int | str, ...]) -> str:
    """The environment variable behind a settings field's error location."""
    field = str(loc[0]) if loc else "settings"
    names = [name for name, f in ENVIRONMENT.items() if f == field]
    return names[0] if names else field


def secret_variable(name: str) -> bool:
    """True for a variable holding one of the settings' secrets."""
    return (
        name in PROVIDER_SECRETS
        or name.startswith(WEBHOOK_SECRET_PREFIX)
        or name.startswith(EVENTS_TOKEN_PREFIX)
        or name.startswith(DESTINATION_SECRET_PREFIX)
        or (ENVIRONMENT.get(name) in ("admin_token", "mcp_token", "otel_headers"))
    )


def environ(name: str, default: str | None = None) -> str | None:
    """Read one variable that is not a setting: a tool's arguments, ``${NAME}`` in gantz.yaml.

    Never for a secret of the settings (see :func:`secret_variable`): those are read
    once by :func:`load`.
    """
    return os.environ.get(name, default)


#: Variables of the process a tool's script gets besides the settings': how to find
#: programs, the locale and time zone, where the interpreter and temporary files are.
CHILD_VARIABLES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "PYTHONPATH",
        "VIRTUAL_ENV",
        "SYSTEMROOT",
    }
)
#: Variables the agent runner sets for a tool call (lineage and idempotency).
TOOL_CALL_VARIABLES = frozenset({"EDA_CAUSATION_ID", "EDA_CORRELATION_ID", "EDA_IDEMPOTENCY_KEY"})


def child_variable(name: str) -> bool:
    """True for a variable a tool's script may inherit: an allow-list, never a secret.

    The process basics (:data:`CHILD_VARIABLES`, ``LC_*``), the project's settings that
    are not secrets (the store's and broker's addresses, the prefix, the files), and
    the lineage and idempotency variables. Not the model API's key, not a token, not a
    webhook secret, not anything else the process happens to hold.
    """
    if secret_variable(name):
        return False
    return (
        name in CHILD_VARIABLES
        or name.startswith("LC_")
        or name in ENVIRONMENT
        or name in TOOL_CALL_VARIABLES
    )


def child_environment() -> dict[str, str]:
    """This process's environment for a child process (a tool's script): the allow-list."""
    return {name: value for name, value in os.environ.items() if child_variable(name)}
