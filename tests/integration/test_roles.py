"""Roles over HTTP: an agent sees only its own tasks, a viewer reads all and changes
nothing, an admin does everything (docs/protocol.md, "Roles")."""

from __future__ import annotations

import pytest

from tests.integration.helpers import fail_to_dead_letter, token_cli

NOT_FOUND = {"error": "task_not_found"}


def post_task(hub, token, description="work", **fields):
    reply = hub.api("POST", "/api/tasks", {"description": description, **fields}, token=token)
    assert reply.status == 201, reply
    return reply.body["task_id"]


def listed(hub, token, query=""):
    reply = hub.api("GET", "/api/tasks" + query, token=token)
    assert reply.status == 200, reply
    return [task["id"] for task in reply.body["tasks"]]


def dead_letter(hub, token):
    reply = hub.api("GET", "/api/tasks/dead-letter", token=token)
    assert reply.status == 200, reply
    return [task["id"] for task in reply.body["tasks"]]


@pytest.fixture
def tokens(hub):
    return {
        name: hub.thread.create_token(name, role)
        for name, role in [
            ("alice", "agent"),
            ("bob", "agent"),
            ("w", "agent"),
            ("watcher", "viewer"),
        ]
    }


def test_an_agent_reads_only_the_tasks_it_submitted_or_holds(hub, tokens):
    alices = post_task(hub, tokens["alice"], "alice's", metadata={"secret": "a"})
    worker = hub.agent("w", token=tokens["w"])
    worker.recv("task_assign", task_id=alices)
    bobs = post_task(hub, tokens["bob"], "bob's", needed_capabilities=["nobody"])

    assert hub.api("GET", f"/api/tasks/{alices}", token=tokens["alice"]).status == 200
    assert hub.api("GET", f"/api/tasks/{alices}", token=tokens["w"]).status == 200  # holds it
    for reader, task_id in [("alice", bobs), ("w", bobs), ("bob", alices)]:
        reply = hub.api("GET", f"/api/tasks/{task_id}", token=tokens[reader])
        assert (reply.status, reply.body) == (404, NOT_FOUND), (reader, task_id, reply)
    unknown = hub.api("GET", "/api/tasks/task-0000000000000000", token=tokens["bob"])
    assert (unknown.status, unknown.body) == (404, NOT_FOUND), "the same as a task of another"

    assert listed(hub, tokens["alice"]) == [alices]
    assert listed(hub, tokens["w"]) == [alices]
    assert listed(hub, tokens["bob"]) == [bobs]
    assert listed(hub, tokens["bob"], "?assigned_to=w") == [], "a filter never widens"
    assert listed(hub, tokens["alice"], "?status=assigned&assigned_to=w") == [alices]
    assert listed(hub, tokens["alice"], "?status=queued") == []
    assert listed(hub, hub.admin_token) == [alices, bobs]
    # Aggregates stay readable by every token.
    stats = hub.api("GET", "/api/tasks/stats", token=tokens["bob"])
    assert stats.status == 200 and stats.body["by_status"]["assigned"] == 1


def test_an_agent_can_neither_see_nor_retry_another_agents_dead_letter(hub, tokens):
    doomed = post_task(hub, tokens["bob"], "bob's doomed", max_retries=0)
    fail_to_dead_letter(hub.agent("w", token=tokens["w"]), doomed)

    assert dead_letter(hub, tokens["alice"]) == []
    refused = hub.api("POST", f"/api/tasks/{doomed}/retry", token=tokens["alice"])
    assert (refused.status, refused.body) == (404, {"error": "dead_letter_task_not_found"})
    assert hub.task(doomed)["status"] == "dead_letter"

    assert dead_letter(hub, tokens["bob"]) == [doomed]
    assert hub.api("POST", f"/api/tasks/{doomed}/retry", token=tokens["bob"]).status == 200


def test_a_viewer_reads_everything_and_changes_nothing(hub, tokens):
    viewer = tokens["watcher"]
    doomed = post_task(hub, tokens["bob"], max_retries=0)
    worker = hub.agent("w", token=tokens["w"])
    fail_to_dead_letter(worker, doomed)
    alices = post_task(hub, tokens["alice"])
    worker.recv("task_assign", task_id=alices)

    assert hub.api("GET", f"/api/tasks/{alices}", token=viewer).status == 200
    assert hub.api("GET", f"/api/tasks/{doomed}", token=viewer).status == 200
    assert listed(hub, viewer) == [doomed, alices]
    assert dead_letter(hub, viewer) == [doomed]
    for path in ("/api/tasks/stats", "/api/agents/states", "/api/agents/w/state"):
        assert hub.api("GET", path, token=viewer).status == 200, path

    for method, path, body in [
        ("POST", "/api/tasks", {"description": "sneaky"}),
        ("POST", f"/api/tasks/{doomed}/retry", None),
        ("POST", "/admin/tokens", {"agent_id": "x", "role": "admin"}),
        ("GET", "/admin/tokens", None),
        ("DELETE", "/admin/tokens/alice", None),
    ]:
        reply = hub.api(method, path, body, token=viewer)
        assert (reply.status, reply.body) == (403, {"error": "forbidden"}), (method, path)
    assert listed(hub, hub.admin_token) == [doomed, alices], "nothing was queued"
    assert hub.task(doomed)["status"] == "dead_letter"
    assert hub.api("GET", "/api/tasks", token=tokens["alice"]).status == 200, "alice kept"


def test_an_admin_reads_and_retries_every_task(hub, tokens):
    doomed = post_task(hub, tokens["bob"], max_retries=0)
    fail_to_dead_letter(hub.agent("w", token=tokens["w"]), doomed)
    assert dead_letter(hub, hub.admin_token) == [doomed]
    assert hub.api("GET", f"/api/tasks/{doomed}", token=hub.admin_token).status == 200
    assert hub.api("POST", f"/api/tasks/{doomed}/retry", token=hub.admin_token).status == 200


def test_viewer_tokens_come_from_the_admin_route_and_the_cli(hub):
    created = hub.api(
        "POST", "/admin/tokens", {"agent_id": "dash", "role": "viewer"}, token=hub.admin_token
    )
    assert created.status == 201, created
    assert hub.api("GET", "/api/tasks", token=created.body["token"]).status == 200

    made = token_cli(hub.data_dir, "create", "grafana", "--role", "viewer")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert hub.api("GET", "/api/tasks/dead-letter", token=token).status == 200
    assert hub.api("POST", "/api/tasks", {"description": "x"}, token=token).status == 403
    listing = token_cli(hub.data_dir, "list").stdout.splitlines()
    assert {tuple(line.split("\t")[:2]) for line in listing} >= {
        ("dash", "viewer"),
        ("grafana", "viewer"),
    }


def test_a_viewer_token_cannot_connect_as_an_agent(hub, tokens):
    answer = hub.socket().identify("watcher", tokens["watcher"])
    assert answer["type"] == "error", answer
    assert answer["error"].startswith("forbidden"), answer
