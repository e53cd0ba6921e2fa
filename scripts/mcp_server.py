"""The built-in MCP server: the tools of gantz.yaml over stdio or Streamable HTTP.

Each tool's input schema is built from gantz.yaml when the server starts (any
tools the file declares). A call is checked against the schema first (a bad
argument is an error result naming it, and nothing runs), then runs exactly as
Gantz runs it (:func:`eda.tools.run_tool`): stdout is the result (also as
structured content when it is a JSON object), a non-zero exit or a timeout is
an error result carrying stderr. Over HTTP every request needs
``Authorization: Bearer $EDA_MCP_TOKEN``; without a token the server only
listens on exactly ``127.0.0.1``, ``localhost`` or ``::1``. Either way the
``Host`` and ``Origin`` of every request must name the address it listens on
(or a name of ``EDA_MCP_ALLOWED_HOSTS``), so that a web page cannot reach it by
DNS rebinding. Run it with ``eda mcp`` or ``python -m scripts.mcp_server``.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from starlette.types import ASGIApp, Receive, Scope, Send

from eda.errors import InvalidInput
from eda.gantz_yaml import GantzFile
from eda.tools import Tool, ToolResult, run_tool, validate_arguments

#: The variable holding the bearer token of the HTTP transport (``Settings.mcp_token``).
TOKEN_VARIABLE = "EDA_MCP_TOKEN"  # noqa: S105 (the name of a variable, not a secret)
#: Where the Streamable HTTP endpoint is served.
HTTP_PATH = "/mcp"
#: The addresses tokenless HTTP may listen on: exactly these, which no other machine reaches
#: (not the rest of 127/8, nor long forms of ::1, which the SDK's own checks do not cover).
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def build_server(gantz: GantzFile, *, env: Mapping[str, str] | None = None) -> Server[Any]:
    """A low-level MCP server for the tools of one gantz.yaml.

    ``env`` adds variables to every script's environment (over the server's own).
    """
    tools = dict(gantz.tools)

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[describe(tool) for tool in tools.values()])

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        tool = tools.get(params.name)
        if tool is None:
            raise MCPError(types.INVALID_PARAMS, f"unknown tool {params.name!r}")
        return await call(tool, params.arguments or {}, env)

    def input_schema(name: str) -> dict[str, Any] | None:
        return describe(tools[name]).input_schema if name in tools else None

    return Server(
        gantz.name,
        version=gantz.version,
        description=gantz.description or None,
        get_tool_input_schema=input_schema,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def describe(tool: Tool) -> types.Tool:
    """A tool as MCP lists it (a JSON-text parameter also takes the JSON value itself)."""
    return types.Tool(
        name=tool.name, description=tool.description, input_schema=tool.input_schema()
    )


async def call(
    tool: Tool, arguments: Mapping[str, Any], env: Mapping[str, str] | None
) -> types.CallToolResult:
    """Validate, run in a worker thread (the script blocks), and turn the run into a result."""
    try:
        validate_arguments(tool, arguments)
    except InvalidInput as exc:
        return _error(f"invalid argument {exc.field!r}: {exc.reason}")
    try:
        result = await anyio.to_thread.run_sync(lambda: run_tool(tool, arguments, env=env))
    except InvalidInput as exc:  # an http tool's header refused before anything was sent
        return _error(f"invalid argument {exc.field!r}: {exc.reason}")
    return tool_result(tool, result)


def tool_result(tool: Tool, result: ToolResult) -> types.CallToolResult:
    """stdout as the result; a failure as an error result with stderr (and any stdout)."""
    if not result.ok:
        text = "\n".join(part for part in (result.stdout.strip(), result.stderr.strip()) if part)
        return _error(text or f"{tool.name} failed with exit code {result.exit_code}")
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=result.stdout)],
        structured_content=_json_object(result.stdout),
    )


def _error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# -- transports -------------------------------------------------------------------------------


def serve_stdio(server: Server[Any]) -> None:
    """Serve over this process's stdin and stdout until the client closes them."""

    async def main() -> None:
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())

    anyio.run(main)


def serve_http(
    server: Server[Any],
    host: str,
    port: int,
    token: str | None,
    allowed_hosts: Sequence[str] = (),
) -> None:
    """Serve Streamable HTTP on host:port at ``/mcp``, behind the bearer token when one is set.

    Raises InvalidInput before listening when the exposure is unsafe (see :func:`check_exposure`).
    """
    import uvicorn  # only the HTTP transport needs it

    check_exposure(host, token)
    app = http_app(server, host, port, token, allowed_hosts)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    uvicorn.Server(config).run()


def http_app(
    server: Server[Any],
    host: str,
    port: int,
    token: str | None,
    allowed_hosts: Sequence[str] = (),
) -> ASGIApp:
    """The Streamable HTTP ASGI app, wrapped in the bearer-token check when a token is set."""
    app: ASGIApp = server.streamable_http_app(
        streamable_http_path=HTTP_PATH,
        host=host,
        transport_security=transport_security(host, port, allowed_hosts),
    )
    return BearerToken(app, token) if token else app


def transport_security(
    host: str, port: int, allowed_hosts: Sequence[str] = ()
) -> TransportSecuritySettings:
    """Host and Origin checks (DNS rebinding) that accept only the names of this server.

    The SDK turns them on by itself only for the exact loopback spellings; here they are
    always on. Accepted: the listening address (all three loopback names when it is one,
    none when it is a wildcard such as 0.0.0.0) and ``allowed_hosts``, each with ``port``.
    """
    names = [*LOOPBACK] if host in LOOPBACK else []
    if not _is_wildcard(host) and host not in names:
        names.append(host)
    names += [name for name in allowed_hosts if name not in names]
    hosts = [_with_port(name, port) for name in names]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts,
        allowed_origins=[f"{scheme}://{h}" for h in hosts for scheme in ("http", "https")],
    )


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def _with_port(name: str, port: int) -> str:
    """``name:port`` as a Host header writes it (IPv6 addresses in brackets)."""
    try:
        if ipaddress.ip_address(name.strip("[]")).version == 6:
            return f"[{name.strip('[]')}]:{port}"
    except ValueError:
        pass
    return f"{name}:{port}"


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to serve without a token on a non-loopback address.

    The token itself comes from ``Settings.mcp_token``, whose length the settings check.
    """
    if token is None and not is_loopback(host):
        raise InvalidInput(
            "host",
            f"refusing to serve MCP over HTTP on {host} without a token: "
            f"set {TOKEN_VARIABLE}, or listen on 127.0.0.1",
        )


def is_loopback(host: str) -> bool:
    """True for exactly ``127.0.0.1``, ``localhost``, ``::1``: where tokenless HTTP may listen."""
    return host in LOOPBACK


@dataclass
class BearerToken:
    """ASGI middleware: HTTP requests must carry ``Authorization: Bearer <token>``."""

    app: ASGIApp
    token: str

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._authorized(scope):
            await _unauthorized(send)
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        headers = dict(scope.get("headers") or [])
        scheme, _, presented = headers.get(b"authorization", b"").partition(b" ")
        # compared as bytes in constant time: no timing hint, no error on odd input
        return scheme.lower() == b"bearer" and hmac.compare_digest(presented, self.token.encode())


async def _unauthorized(send: Send) -> None:
    body = json.dumps({"error": "unauthorized", "message": "a valid bearer token is required"})
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"www-authenticate", b'Bearer realm="mcp"'),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})


def main() -> None:
    """``python -m scripts.mcp_server [options]``: the same as ``eda mcp [options]``."""
    import sys

    from scripts.cli import main as cli_main

    cli_main(["mcp", *sys.argv[1:]])


if __name__ == "__main__":
    main()
