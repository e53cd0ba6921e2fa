"""Local HTTP endpoints that stand in for the world outside: a webhook receiver, GitHub.

:class:`Receiver` records every request and answers replies scripted per test
(matched by a text in the path or body, so tests sharing it never take each
other's); :class:`GitHubAPI` speaks the REST shapes of GitHub's pull-request and
commit endpoints that the GitHub tools of gantz.yaml use, keeping what is posted.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, request

from tests.http_support import serve


@dataclass
class Request:
    """One request as the endpoint saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


#: A scripted answer: status, body, headers, seconds to wait before answering.
ScriptedReply = tuple[int, str, dict[str, str], float]


@dataclass
class Receiver:
    """Answers 200 unless a script says otherwise; ``url`` once served."""

    requests: list[Request] = field(default_factory=list)
    scripts: list[tuple[str, deque[ScriptedReply]]] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def script(
        self,
        match: str,
        *replies: tuple[int, str]
        | tuple[int, str, dict[str, str]]
        | tuple[int, str, dict[str, str], float],
    ):
        """Answer the requests containing ``match`` with these (status, body[, headers[,
        seconds to wait before answering]])."""
        queued = deque(
            (r[0], r[1], r[2] if len(r) > 2 else {}, r[3] if len(r) > 3 else 0.0) for r in replies
        )
        with self._lock:
            self.scripts.append((match, queued))

    def received(self, match: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if match in r.path or match.encode() in r.body]

    def app(self) -> Flask:
        app = Flask("receiver")

        @app.route("/", defaults={"path": ""}, methods=["GET", "POST"])
        @app.route("/<path:path>", methods=["GET", "POST"])
        def receive(path: str) -> Response:
            body = request.get_data()
            seen = Request(request.method, "/" + path, dict(request.headers), body)
            with self._lock:
                self.requests.append(seen)
                scripted = next(
                    (
                        replies.popleft()
                        for match, replies in self.scripts
                        if replies and (match in seen.path or match.encode() in body)
                    ),
                    (200, "ok", {}, 0.0),
                )
            status, text, headers, delay = scripted
            time.sleep(delay)  # outside the lock: a slow answer holds up no other request
            return Response(text, status, headers)

        return app


def serve_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    with serve(receiver.app()) as url:
        receiver.url = url
        yield receiver


@dataclass
class GitHubAPI:
    """Pull requests, commits, their diffs, reviews and commit comments, as GitHub's REST API
    answers them; every request needs ``Authorization`` with ``token``."""

    token: str
    diffs: dict[str, str] = field(default_factory=dict)
    reviews: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    comments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    url: str = ""
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1000))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def posts(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST"]

    def app(self) -> Flask:
        app = Flask("github")

        @app.before_request
        def authorised() -> Response | None:
            with self._lock:
                self.requests.append(
                    Request(request.method, request.path, dict(request.headers), request.get_data())
                )
            if request.headers.get("Authorization") not in (
                f"Bearer {self.token}",
                f"token {self.token}",
            ):
                return _json({"message": "Bad credentials"}, 401)
            return None

        @app.get("/repos/<owner>/<repo>/pulls/<int:number>")
        def pull(owner: str, repo: str, number: int) -> Response:
            key = f"{owner}/{repo}#{number}"
            if key not in self.diffs:
                return _json({"message": "Not Found"}, 404)
            if "diff" in request.headers.get("Accept", ""):
                return Response(self.diffs[key], 200, {"Content-Type": "text/plain"})
            return _json({"number": number, "state": "open", "title": "change"}, 200)

        @app.route("/repos/<owner>/<repo>/pulls/<int:number>/reviews", methods=["GET", "POST"])
        def pull_reviews(owner: str, repo: str, number: int) -> Response:
            return self._thread(self.reviews, f"{owner}/{repo}#{number}", review=True)

        @app.get("/repos/<owner>/<repo>/commits/<sha>")
        def commit(owner: str, repo: str, sha: str) -> Response:
            key = f"{owner}/{repo}@{sha}"
            if key not in self.diffs:
                return _json({"message": "No commit found for SHA: " + sha}, 422)
            return Response(self.diffs[key], 200, {"Content-Type": "text/plain"})

        @app.route("/repos/<owner>/<repo>/commits/<sha>/comments", methods=["GET", "POST"])
        def commit_comments(owner: str, repo: str, sha: str) -> Response:
            return self._thread(self.comments, f"{owner}/{repo}@{sha}", review=False)

        return app

    def _thread(self, store: dict[str, list[dict[str, Any]]], key: str, review: bool) -> Response:
        with self._lock:
            items = store.setdefault(key, [])
            if request.method == "GET":
                return self._page(items)
            sent = request.get_json(force=True)
            if not isinstance(sent, dict) or not sent.get("body"):
                return _json({"message": "Validation Failed", "errors": ["body"]}, 422)
            item: dict[str, Any] = {
                "id": next(self._ids),
                "body": sent["body"],
                "user": {"login": "eda-bot"},
            }
            if review:
                item["state"] = {"APPROVE": "APPROVED", "REQUEST_CHANGES": "CHANGES_REQUESTED"}.get(
                    sent.get("event", "COMMENT"), "COMMENTED"
                )
            item["html_url"] = f"https://github.example/{key}#{item['id']}"
            items.append(item)
            return _json(item, 201)

    @staticmethod
    def _page(items: list[dict[str, Any]]) -> Response:
        """One page of a list, as GitHub pages them: ``per_page`` (30 by default, at most
        100) and ``page``, with a ``Link`` header naming the next page while there is one."""
        size = min(request.args.get("per_page", 30, type=int), 100)
        number = request.args.get("page", 1, type=int)
        headers = {}
        if number * size < len(items):
            headers["Link"] = f'<{request.base_url}?per_page={size}&page={number + 1}>; rel="next"'
        return _json(items[(number - 1) * size : number * size], 200, headers)


def _json(value: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(value), status, {"Content-Type": "application/json", **(headers or {})}
    )
