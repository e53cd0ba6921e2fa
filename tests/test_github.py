"""CodeReviewer against a local server speaking GitHub's REST shapes: the shipped agent (its
model scripted by the local Messages API server) reads a pull request's or a pushed commit's
diff through the http tools of gantz.yaml and posts its review once (agents/github.py)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator

import pytest

from agents.context import DeliveryContext
from agents.github import marker, post_review
from eda.core import Core
from eda.event import Event
from eda.settings import Settings
from tests.conftest import RedisServer
from tests.http_support import serve
from tests.messages_api import (
    MessagesAPI,
    messages_api_server,
    text,
    tool_use,
)
from tests.messages_api import message as reply
from tests.receivers import GitHubAPI
from tests.test_agents_worker import settled
from tests.workers import core_with_worker, module_env

__all__ = ["messages_api_server"]  # a fixture used below

pytestmark = pytest.mark.timeout(90)

TOKEN = "ghp_test_token_of_the_stand_in"
DIFF = "diff --git a/app.py b/app.py\n+password = 'hunter2'\n"
ROUTES = """routes:
  - events: [code.pr_opened, code.pushed]
    handler: CodeReviewer
  - events: [code.review_posted]
    handler: tasks.builtin:log_event
"""


@pytest.fixture(scope="module")
def github() -> Iterator[GitHubAPI]:
    api = GitHubAPI(TOKEN)
    with serve(api.app()) as url:
        api.url = url
        yield api


@pytest.fixture(scope="module")
def review_core(
    redis_server: RedisServer,
    github: GitHubAPI,
    messages_api_server: MessagesAPI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Core]:
    folder = tmp_path_factory.mktemp("github")
    (folder / "routes.yaml").write_text(ROUTES)
    env = module_env(
        "github",
        redis_server.url,
        14,
        folder / "routes.yaml",
        messages_api_server.url,
        EDA_GITHUB_API_URL=github.url,
        GITHUB_TOKEN=TOKEN,
    )
    with core_with_worker(env, folder) as core:
        yield core


def test_a_pull_request_leads_to_a_diff_fetched_and_a_review_posted(
    review_core: Core, github: GitHubAPI, messages_api_server: MessagesAPI
) -> None:
    repo = f"shop{uuid.uuid4().hex[:6]}"
    github.diffs[f"octo-org/{repo}#7"] = DIFF
    review = {
        "owner": "octo-org",
        "repo": repo,
        "number": 7,
        "verdict": "request_changes",
        "body": "A password is committed in app.py.",
    }
    posted = {"repository": f"octo-org/{repo}", "pull_request": 7, "verdict": "request_changes"}
    script = messages_api_server.script(
        reply(
            tool_use("github_pull_request_diff", {"owner": "octo-org", "repo": repo, "number": 7})
        ),
        reply(tool_use("github_post_review", review)),
        reply(
            tool_use(
                "publish_event", {"event_type": "code.review_posted", "payload": json.dumps(posted)}
            )
        ),
        reply(text("Asked for changes: a committed password.")),
        match=repo,
    )
    payload = {
        "action": "opened",
        "number": 7,
        "repository": {"full_name": f"octo-org/{repo}"},
        "pull_request": {"number": 7, "title": "Add login"},
    }

    event_id = review_core.publish("code.pr_opened", payload, "github").event_id
    delivery = settled(review_core, event_id, "CodeReviewer", "succeeded", "dead", "stopped")

    assert delivery["status"] == "succeeded", delivery
    (fetch,) = [r for r in github.requests if r.path == f"/repos/octo-org/{repo}/pulls/7"]
    assert fetch.headers["Accept"] == "application/vnd.github.diff"
    assert fetch.headers["Authorization"] == f"Bearer {TOKEN}"
    diff_seen = script.requests[1].body["messages"][-1]["content"][0]["content"]
    assert "password = 'hunter2'" in diff_seen
    (posted_review,) = github.reviews[f"octo-org/{repo}#7"]
    assert posted_review["state"] == "CHANGES_REQUESTED"
    assert posted_review["body"].startswith("A password is committed in app.py.")
    assert "eda-idempotency-key" in posted_review["body"]
    (recorded,) = review_core.history(event_type="code.review_posted", limit=100)[:1]
    assert recorded.event.source == "CodeReviewer" and recorded.event.causation_id == event_id


def test_a_push_leads_to_the_commit_diff_fetched_and_one_commit_comment(
    review_core: Core, github: GitHubAPI, messages_api_server: MessagesAPI
) -> None:
    repo = f"shop{uuid.uuid4().hex[:6]}"
    sha = uuid.uuid4().hex
    github.diffs[f"octo-org/{repo}@{sha}"] = DIFF
    review = {
        "owner": "octo-org",
        "repo": repo,
        "sha": sha,
        "verdict": "request_changes",
        "body": "A password is committed in app.py.",
    }
    script = messages_api_server.script(
        reply(tool_use("github_commit_diff", {"owner": "octo-org", "repo": repo, "sha": sha})),
        reply(tool_use("github_post_review", review)),
        reply(text("Commented on the head commit: a committed password.")),
        match=repo,
    )
    payload = {
        "ref": "refs/heads/main",
        "after": sha,
        "repository": {"full_name": f"octo-org/{repo}"},
        "commits": [{"id": sha, "message": "Add login"}],
    }

    event_id = review_core.publish("code.pushed", payload, "github").event_id
    delivery = settled(review_core, event_id, "CodeReviewer", "succeeded", "dead", "stopped")

    assert delivery["status"] == "succeeded", delivery
    (fetch,) = [r for r in github.requests if r.path == f"/repos/octo-org/{repo}/commits/{sha}"]
    assert fetch.method == "GET"
    assert fetch.headers["Accept"] == "application/vnd.github.diff"
    assert fetch.headers["Authorization"] == f"Bearer {TOKEN}"
    diff_seen = script.requests[1].body["messages"][-1]["content"][0]["content"]
    assert "password = 'hunter2'" in diff_seen
    (comment,) = github.comments[f"octo-org/{repo}@{sha}"]
    assert comment["body"].startswith("A password is committed in app.py.")
    assert "eda-idempotency-key" in comment["body"]


def test_a_post_run_again_after_a_crash_does_not_post_twice(
    github: GitHubAPI, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that died after GitHub stored the review and before the journal recorded
    it runs the call again with the same idempotency key: the review is found, not repeated."""
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    settings = make_settings(github_api_url=github.url)
    event = Event.create(type="code.pushed", source="github", payload={})
    key = f"{event.id}:CodeReviewer:1:toolu_post"
    sha = uuid.uuid4().hex
    arguments = {
        "owner": "octo-org",
        "repo": "shop",
        "sha": sha,
        "verdict": "comment",
        "body": "Looks fine.",
    }

    first = post_review.function(arguments, DeliveryContext(event, settings, idempotency_key=key))
    again = post_review.function(arguments, DeliveryContext(event, settings, idempotency_key=key))

    (comment,) = github.comments[f"octo-org/shop@{sha}"]
    assert comment["body"] == f"Looks fine.\n\n{marker(key)}"
    assert first == {
        "posted": True,
        "review": {"id": comment["id"], "html_url": comment["html_url"]},
    }
    assert again == {"posted": False, "already_posted": first["review"]}
    other = DeliveryContext(event, settings, idempotency_key=key.replace("1:toolu", "2:toolu"))
    assert post_review.function(arguments, other)["posted"] is True  # a new run posts anew


@pytest.mark.parametrize("earlier", [0, 150], ids=["alone", "beyond-the-first-page"])
def test_a_pull_request_review_run_again_is_not_posted_twice(
    github: GitHubAPI,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    earlier: int,
) -> None:
    """The review is looked for on every page of the pull request's reviews (GitHub gives
    at most 100 a page), so one posted after many others is still found."""
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    settings = make_settings(github_api_url=github.url)
    repo = f"shop{uuid.uuid4().hex[:6]}"
    github.reviews[f"octo-org/{repo}#9"] = [
        {"id": n, "body": f"Review {n}.", "state": "COMMENTED"} for n in range(earlier)
    ]
    event = Event.create(type="code.pr_opened", source="github", payload={})
    context = DeliveryContext(event, settings, idempotency_key=f"{event.id}:CodeReviewer:1:toolu_p")
    arguments = {
        "owner": "octo-org",
        "repo": repo,
        "number": 9,
        "verdict": "approve",
        "body": "OK.",
    }

    first = post_review.function(arguments, context)
    again = post_review.function(arguments, context)

    ours = [r for r in github.reviews[f"octo-org/{repo}#9"] if "eda-idempotency-key" in r["body"]]
    assert [review["state"] for review in ours] == ["APPROVED"]
    assert first["posted"] is True and again == {"posted": False, "already_posted": first["review"]}
