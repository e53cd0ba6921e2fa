"""CodeReviewer's review, posted to GitHub once however often the call runs.

Reading a diff is a plain http tool of gantz.yaml. Posting is not: GitHub takes no
idempotency key, and a worker that dies after GitHub stored the review and before
the run's journal recorded it runs the call again (with the same idempotency key,
``<event>:<handler>:<run>:<tool_use id>``). So the review's body ends with that key
as a hidden marker, and the tool first looks for a review (or commit comment)
carrying it: found, it answers with that one instead of posting another.

The API is ``EDA_GITHUB_API_URL`` and the token ``GITHUB_TOKEN``, as for the http tools.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from agents.context import DeliveryContext
from agents.toolbox import python_tool
from eda.errors import InvalidInput
from eda.settings import environ

#: A review's verdict, as the model gives it -> GitHub's review event.
VERDICTS = {"approve": "APPROVE", "comment": "COMMENT", "request_changes": "REQUEST_CHANGES"}
#: Seconds a GitHub request may take.
TIMEOUT = 30.0
#: Items asked for a page: GitHub's most (its default, 30, would take more requests).
PAGE_SIZE = 100


def marker(key: str) -> str:
    """The hidden line that ties a review to the tool call that posted it."""
    return f"<!-- eda-idempotency-key: {key} -->"


@python_tool(
    "github_post_review",
    "Post your review on GitHub: a pull-request review when you give the pull request's "
    "number, or a commit comment when you give a commit's sha (for a push). Posted once.",
    {
        "type": "object",
        "properties": {
            "owner": {"type": "string", "description": "The repository's owner."},
            "repo": {"type": "string", "description": "The repository's name."},
            "number": {"type": "integer", "description": "The pull request's number."},
            "sha": {"type": "string", "description": "The commit's sha (a push)."},
            "verdict": {"type": "string", "enum": list(VERDICTS)},
            "body": {"type": "string", "description": "The review, in Markdown."},
        },
        "required": ["owner", "repo", "verdict", "body"],
        "additionalProperties": False,
    },
)
def post_review(arguments: dict[str, Any], context: DeliveryContext) -> dict[str, Any]:
    owner, repo = arguments["owner"], arguments["repo"]
    if ("number" in arguments) == ("sha" in arguments):
        raise InvalidInput("number", "give the pull request's number or the commit's sha")
    base = f"{context.settings.github_api_url.rstrip('/')}/repos/{owner}/{repo}"
    thread = (
        f"{base}/pulls/{int(arguments['number'])}/reviews"
        if "number" in arguments
        else f"{base}/commits/{arguments['sha']}/comments"
    )
    key = context.idempotency_key or context.event.id
    posted = next((item for item in _get(thread) if marker(key) in item.get("body", "")), None)
    if posted is not None:
        return {"posted": False, "already_posted": _summary(posted)}
    body = f"{arguments['body']}\n\n{marker(key)}"
    sent: dict[str, Any] = {"body": body}
    if "number" in arguments:
        sent["event"] = VERDICTS[arguments["verdict"]]
    return {"posted": True, "review": _summary(_request("POST", thread, sent))}


def _summary(item: dict[str, Any]) -> dict[str, Any]:
    return {key: item[key] for key in ("id", "state", "html_url") if key in item}


def _get(url: str) -> list[dict[str, Any]]:
    """Every item of a GitHub list, following its pages: a review posted earlier may be
    anywhere in a long thread, and missing it would post it again."""
    items: list[dict[str, Any]] = []
    page: str | None = f"{url}?per_page={PAGE_SIZE}"
    while page is not None:
        found, link = _exchange("GET", page, None)
        items.extend(found if isinstance(found, list) else [])
        page = _next_page(link)
    return items


def _next_page(link: str) -> str | None:
    """The ``rel="next"`` address of a ``Link`` header, or None on the last page."""
    for part in link.split(","):
        target, _, parameters = part.partition(";")
        if 'rel="next"' in parameters:
            return target.strip().strip("<>")
    return None


def _request(method: str, url: str, body: dict[str, Any] | None) -> Any:
    """One call to GitHub's REST API; a failure says the status and GitHub's message."""
    return _exchange(method, url, body)[0]


def _exchange(method: str, url: str, body: dict[str, Any] | None) -> tuple[Any, str]:
    """One call to GitHub's REST API: its JSON answer and its ``Link`` header."""
    headers = {
        "Accept": "application/vnd.github+json",
        "Authorization": f"Bearer {environ('GITHUB_TOKEN') or ''}",
        "X-GitHub-Api-Version": "2022-11-28",
        "User-Agent": "eda",
    }
    data = json.dumps(body).encode() if body is not None else None
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data, headers, method=method)  # noqa: S310 (a setting)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:  # noqa: S310
            return json.loads(answer.read() or b"null"), answer.headers.get("Link", "")
    except urllib.error.HTTPError as exc:
        said = exc.read(500).decode(errors="replace")
        raise RuntimeError(f"GitHub answered {exc.code} to {method} {url}: {said}") from None
