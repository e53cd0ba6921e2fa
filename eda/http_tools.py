"""Running the ``http`` form of a gantz.yaml tool, with the standard library.

As Gantz does: ``{{name}}`` is replaced in the URL, the headers and the body
(arguments not sent stay literal), the method defaults to GET, a body without
a Content-Type is sent as JSON, the response body is the result (narrowed by
``extract_json`` when that path exists in it), and a status of 400 or more is
a failure. Unlike Gantz, arguments are percent-encoded where they land in the
URL, so that an argument can never change the host or the path it was meant
for, and a header value holding a line break is refused.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from eda.errors import InvalidInput
from eda.tools import HttpRequest, ToolResult, substitute

#: One step of an ``extract_json`` path: ``key``, ``key[2]`` or ``[2]``.
PATH_STEP = re.compile(r"^([^\[\]]*)((?:\[\d+\])*)$")


def run_http(request: HttpRequest, texts: Mapping[str, str]) -> ToolResult:
    """Send the tool's request with these argument texts; a ToolResult like a script's."""
    url = substitute(request.url, {name: quote(text, safe="") for name, text in texts.items()})
    headers = {name: substitute(value, texts) for name, value in request.headers.items()}
    for name, value in headers.items():
        if "\r" in value or "\n" in value:
            raise InvalidInput(name, "a header value must not contain a line break")
    body = substitute(request.body, texts).encode() if request.body is not None else None
    if body is not None and not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "application/json"
    started = time.monotonic()
    # The URL's scheme is fixed text of gantz.yaml, checked (http or https) when it was loaded.
    prepared = urllib.request.Request(url, body, headers, method=request.method)  # noqa: S310
    try:
        with urllib.request.urlopen(prepared, timeout=request.timeout) as response:  # noqa: S310
            status, raw = int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        timed_out = isinstance(reason, TimeoutError)
        message = f"request to {url} failed: {reason}"
        return ToolResult(False, "", message, None, time.monotonic() - started, timed_out)
    text = raw.decode(errors="replace")
    if request.extract_json:
        text = extract_json(text, request.extract_json)
    failed = status >= 400
    stderr = f"HTTP {status} from {url}" if failed else ""
    return ToolResult(
        not failed, text, stderr, 1 if failed else 0, time.monotonic() - started, False
    )


def extract_json(text: str, path: str) -> str:
    """The value at a dotted path (``data.items[0].name``); the whole text when it is not there."""
    try:
        value: Any = json.loads(text)
        for step in path.split("."):
            match = PATH_STEP.match(step)
            if match is None:
                return text
            key, indexes = match.groups()
            if key:
                value = value[key]
            for index in re.findall(r"\d+", indexes):
                value = value[int(index)]
    except (ValueError, KeyError, IndexError, TypeError):
        return text
    return value if isinstance(value, str) else json.dumps(value, indent=2)
