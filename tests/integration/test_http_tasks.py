"""HTTP task routes: submit, read, list and filter, stats, dead letter, retry, auth."""

from __future__ import annotations

import json

import pytest

from tests.integration.helpers import MIB, events, fail_to_dead_letter, now_ms

TASK_FIELDS = {
    "id",
    "description",
    "metadata",
    "priority",
    "effective_priority",
    "status",
    "assigned_to",
    "assigned_at",
    "generation",
    "retry_count",
    "max_retries",
    "needed_capabilities",
    "last_error",
    "complete_by",
    "result",
    "tokens_used",
    "submitted_by",
    "created_at",
    "updated_at",
    "history",
}


def test_submit_replies_201_with_the_queued_shape(hub):
    before = now_ms()
    reply = hub.api("POST", "/api/tasks", {"description": "write docs", "priority": "high"})
    assert reply.status == 201
    assert "json" in reply.content_type
    body = reply.body
    assert set(body) == {"status", "task_id", "priority", "created_at"}
    assert body["status"] == "queued"
    assert body["priority"] == "high"
    assert body["task_id"].startswith("task-")
    assert before <= body["created_at"] <= now_ms()


def test_submit_defaults_and_task_shape(hub):
    reply = hub.api("POST", "/api/tasks", {"description": "plain"})
    assert reply.status == 201
    assert reply.body["priority"] == "normal"

    got = hub.api("GET", f"/api/tasks/{reply.body['task_id']}")
    assert got.status == 200
    task = got.body
    assert set(task) == TASK_FIELDS
    assert task["id"] == reply.body["task_id"]
    assert task["description"] == "plain"
    assert task["metadata"] == {}
    assert task["priority"] == "normal"
    assert task["effective_priority"] == "normal"
    assert task["status"] == "queued"
    assert task["assigned_to"] is None
    assert task["assigned_at"] is None
    assert task["retry_count"] == 0
    assert task["max_retries"] == 3
    assert task["needed_capabilities"] == []
    assert task["last_error"] is None
    assert task["complete_by"] is None
    assert task["result"] is None
    assert task["tokens_used"] is None
    assert task["submitted_by"] == "submitter"  # the token's agent id
    assert task["created_at"] == reply.body["created_at"]
    assert events(task) == ["queued"]
    entry = task["history"][0]
    assert set(entry) == {"event", "timestamp", "details"}
    assert isinstance(entry["timestamp"], int)


def test_submit_keeps_every_given_field(hub):
    complete_by = now_ms() + 3_600_000
    task_id = hub.submit(
        "full",
        priority="urgent",
        metadata={"repo": "x", "n": [1, 2]},
        needed_capabilities=["code", "review"],
        max_retries=0,
        complete_by=complete_by,
    )
    task = hub.api("GET", f"/api/tasks/{task_id}").body
    assert task["priority"] == "urgent"
    assert task["metadata"] == {"repo": "x", "n": [1, 2]}
    assert task["needed_capabilities"] == ["code", "review"]
    assert task["max_retries"] == 0
    assert task["complete_by"] == complete_by


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "description"),
        ({"description": ""}, "description"),
        ({"description": "   "}, "description"),
        ({"description": 5}, "description"),
        ({"description": "x", "priority": "critical"}, "priority"),
        ({"description": "x", "priority": 1}, "priority"),
        ({"description": "x", "metadata": [1]}, "metadata"),
        ({"description": "x", "metadata": "a=b"}, "metadata"),
        ({"description": "x", "needed_capabilities": "code"}, "needed_capabilities"),
        ({"description": "x", "needed_capabilities": ["code", 3]}, "needed_capabilities"),
        ({"description": "x", "needed_capabilities": [{"name": "code"}]}, "needed_capabilities"),
        ({"description": "x", "max_retries": -1}, "max_retries"),
        ({"description": "x", "max_retries": "3"}, "max_retries"),
        ({"description": "x", "max_retries": 1.5}, "max_retries"),
        ({"description": "x", "max_retries": True}, "max_retries"),
        ({"description": "x", "complete_by": "tomorrow"}, "complete_by"),
        ({"description": "x", "complete_by": True}, "complete_by"),
        ({"description": "x", "complete_by": [1]}, "complete_by"),
    ],
)
def test_bad_submission_is_400_naming_the_field(hub, body, field):
    reply = hub.api("POST", "/api/tasks", body)
    assert reply.status == 400, reply
    assert field in reply.body["error"], reply.body
    assert hub.api("GET", "/api/tasks").body["count"] == 0


@pytest.mark.parametrize(
    "raw", [b"{not json", b"", b"\xff\xfe", b"[]", b'[{"description": "x"}]', b'"x"', b"null"]
)
def test_non_object_body_is_400(hub, raw):
    reply = hub.api("POST", "/api/tasks", raw=raw)
    assert reply.status == 400, reply
    assert isinstance(reply.body.get("error"), str) and reply.body["error"]
    assert hub.api("GET", "/api/tasks").body["count"] == 0


def test_body_over_one_mib_is_413(hub):
    body = json.dumps({"description": "x" * MIB}).encode()
    reply = hub.api("POST", "/api/tasks", raw=body)
    assert reply.status == 413, reply
    assert "error" in reply.body
    assert hub.api("GET", "/api/tasks").body["count"] == 0


def test_body_far_over_one_mib_is_413_too(hub):
    body = json.dumps({"description": "x" * (20 * MIB)}).encode()
    try:
        reply = hub.api("POST", "/api/tasks", raw=body)
    except OSError as error:  # urllib: reset, broken pipe
        raise AssertionError(f"a 20 MiB body got no reply but {error!r}") from None
    assert reply.status == 413, reply
    assert "error" in reply.body


def test_body_just_under_one_mib_is_accepted(hub):
    body = json.dumps({"description": "x" * (MIB - 100)}).encode()
    assert len(body) <= MIB
    assert hub.api("POST", "/api/tasks", raw=body).status == 201


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/tasks", {"description": "x"}),
        ("GET", "/api/tasks", None),
        ("GET", "/api/tasks/stats", None),
        ("GET", "/api/tasks/dead-letter", None),
        ("GET", "/api/tasks/task-0", None),
        ("POST", "/api/tasks/task-0/retry", None),
        ("GET", "/api/agents/states", None),
        ("GET", "/api/agents/a1/state", None),
        ("POST", "/admin/tokens", {"agent_id": "x"}),
        ("GET", "/admin/tokens", None),
        ("DELETE", "/admin/tokens/x", None),
    ],
)
@pytest.mark.parametrize(
    "auth",
    [None, "Bearer wrong-token", "Bearer ", "Basic dXNlcjpwYXNz", "TOKEN"],
    ids=["no-header", "wrong", "empty", "basic", "no-scheme"],
)
def test_token_routes_refuse_missing_or_wrong_token(hub, method, path, body, auth):
    if auth == "TOKEN":
        auth = hub.token  # the right token, without "Bearer "
    headers = {} if auth is None else {"Authorization": auth}
    reply = hub.api(method, path, body, token=None, headers=headers)
    assert reply.status == 401, reply
    assert reply.body == {"error": "unauthorized"}


def test_get_unknown_task_is_404(hub):
    reply = hub.api("GET", "/api/tasks/task-doesnotexist")
    assert reply.status == 404
    assert reply.body == {"error": "task_not_found"}


def test_list_tasks_with_filters(hub):
    low = hub.submit("l", priority="low")
    high1 = hub.submit("h1", priority="high")
    high2 = hub.submit("h2", priority="high", needed_capabilities=["gpu"])
    worker = hub.agent("worker-1")
    assert worker.recv("task_assign")["task_id"] == high1

    everything = hub.api("GET", "/api/tasks").body
    assert everything["count"] == 3
    assert [t["id"] for t in everything["tasks"]] == [low, high1, high2]
    assert all(set(t) == TASK_FIELDS for t in everything["tasks"])

    def ids(query):
        reply = hub.api("GET", "/api/tasks?" + query)
        assert reply.status == 200, reply
        assert reply.body["count"] == len(reply.body["tasks"])
        return [t["id"] for t in reply.body["tasks"]]

    assert ids("status=queued") == [low, high2]
    assert ids("status=assigned") == [high1]
    assert ids("status=completed") == []
    assert ids("priority=high") == [high1, high2]
    assert ids("priority=urgent") == []
    assert ids("assigned_to=worker-1") == [high1]
    assert ids("assigned_to=nobody") == []
    assert ids("status=queued&priority=high") == [high2]


@pytest.mark.parametrize(
    "query", ["status=bogus", "priority=critical", "status=dead", "priority=2"]
)
def test_list_tasks_bad_filter_is_400(hub, query):
    hub.submit()
    reply = hub.api("GET", "/api/tasks?" + query)
    assert reply.status == 400, reply
    assert query.split("=")[0] in reply.body["error"]


def test_stats_count_dead_letter_only_in_dead_letter(hub):
    empty = hub.api("GET", "/api/tasks/stats").body
    assert set(empty) == {"by_status", "by_priority", "dead_letter"}
    assert empty["dead_letter"] == 0
    assert set(empty["by_priority"]) == {"urgent", "high", "normal", "low"}
    assert sum(empty["by_status"].values()) == 0

    doomed = hub.submit("doomed", priority="urgent", max_retries=0)
    agent = hub.agent("a1")
    fail_to_dead_letter(agent, doomed)
    done = hub.submit("done", priority="high")
    assign = agent.recv("task_assign", task_id=done)
    agent.send(
        {"type": "task_complete", "task_id": done, "generation": assign["generation"], "result": {}}
    )
    agent.recv("task_ack", task_id=done, status="complete")
    hub.submit("waiting", priority="low", needed_capabilities=["nobody-has-this"])
    hub.submit("waiting too", priority="low", needed_capabilities=["nobody-has-this"])

    stats = hub.api("GET", "/api/tasks/stats").body
    assert stats["dead_letter"] == 1
    assert stats["by_status"].get("dead_letter", 0) == 0
    assert stats["by_status"]["queued"] == 2
    assert stats["by_status"]["completed"] == 1
    assert stats["by_status"].get("assigned", 0) == 0
    assert sum(stats["by_status"].values()) == 3
    assert stats["by_priority"]["urgent"] == 0  # the urgent one is dead
    assert stats["by_priority"]["high"] == 1
    assert stats["by_priority"]["low"] == 2
    assert sum(stats["by_priority"].values()) == 3


def test_dead_letter_list(hub):
    empty = {"tasks": [], "count": 0, "next_cursor": None}
    assert hub.api("GET", "/api/tasks/dead-letter").body == empty
    doomed = hub.submit("doomed", max_retries=0)
    agent = hub.agent("a1")
    fail_to_dead_letter(agent, doomed)
    hub.submit("alive", needed_capabilities=["x"])

    reply = hub.api("GET", "/api/tasks/dead-letter")
    assert reply.status == 200
    assert reply.body["count"] == 1
    (task,) = reply.body["tasks"]
    assert set(task) == TASK_FIELDS
    assert task["id"] == doomed
    assert task["status"] == "dead_letter"
    assert task["last_error"] == "boom"
    assert events(task)[-1] == "dead_letter"


def test_retry_requeues_a_dead_letter_task_with_retry_count_reset(hub):
    doomed = hub.submit("doomed", max_retries=1)
    agent = hub.agent("a1")
    fail_to_dead_letter(agent, doomed)
    assert hub.task(doomed)["retry_count"] == 1

    reply = hub.api("POST", f"/api/tasks/{doomed}/retry")
    assert reply.status == 200, reply
    assert reply.body["status"] == "requeued"
    assert reply.body["task_id"] == doomed

    # Back in the queue: the idle agent gets it again under a new generation.
    again = agent.recv("task_assign", task_id=doomed)
    assert again["generation"] == 2
    task = hub.api("GET", f"/api/tasks/{doomed}").body
    assert task["retry_count"] == 0
    assert task["status"] == "assigned"
    assert events(task) == ["queued", "assigned", "dead_letter", "queued", "assigned"]
    assert hub.api("GET", "/api/tasks/dead-letter").body["count"] == 0
    assert hub.api("GET", "/api/tasks/stats").body["dead_letter"] == 0


def test_retry_of_a_task_not_in_dead_letter_is_404(hub):
    queued = hub.submit()
    for task_id in (queued, "task-doesnotexist"):
        reply = hub.api("POST", f"/api/tasks/{task_id}/retry")
        assert reply.status == 404, reply
        assert "error" in reply.body
    assert hub.task(queued)["status"] == "queued"
    assert events(hub.task(queued)) == ["queued"]


def test_retry_of_a_completed_task_is_404(hub):
    task_id = hub.submit()
    agent = hub.agent("a1")
    assign = agent.recv("task_assign")
    agent.send({"type": "task_complete", "task_id": task_id, "generation": assign["generation"]})
    agent.recv("task_ack", status="complete")
    reply = hub.api("POST", f"/api/tasks/{task_id}/retry")
    assert reply.status == 404, reply
    assert hub.task(task_id)["status"] == "completed"
