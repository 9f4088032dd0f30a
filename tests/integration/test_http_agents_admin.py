"""HTTP: health, agents and their FSM states, admin token routes, unknown routes."""

from __future__ import annotations

import re

import pytest

from tests.integration.helpers import cluster_fields, now_ms
from tests.waiting import wait_until

AGENT_FIELDS = {"agent_id", "name", "status", "capabilities", "connected_at", "fsm_state"}
STATE_FIELDS = {
    "agent_id",
    "fsm_state",
    "current_task_id",
    "capabilities",
    "flags",
    "connected_at",
    "name",
}


def test_health_needs_no_token_and_counts_agents(hub):
    reply = hub.api("GET", "/health", token=None)
    assert reply.status == 200
    assert reply.body == {"status": "ok", "agents_connected": 0}
    first = hub.agent("a1")
    hub.agent("a2")
    assert hub.api("GET", "/health", token=None).body["agents_connected"] == 2
    first.close()
    hub.agent("a3").round_trip()
    # a1's socket closed: it leaves the count once the hub has handled the close.
    wait_until(
        lambda: (n := hub.api("GET", "/health", token=None).body["agents_connected"]) == 2 or n,
        what="a1 gone from the count",
    )


def test_agents_lists_connected_agents_without_a_token(hub):
    assert hub.api("GET", "/api/agents", token=None).body == {"agents": []}
    before = now_ms()
    hub.agent("a1", ["code", {"name": "review", "level": 2}], name="Agent One", status="idle")
    reply = hub.api("GET", "/api/agents", token=None)
    assert reply.status == 200
    (agent,) = reply.body["agents"]
    assert set(agent) == AGENT_FIELDS | cluster_fields(hub)
    assert agent["agent_id"] == "a1"
    assert agent["name"] == "Agent One"
    assert agent["status"] == "idle"
    assert agent["capabilities"] == ["code", {"name": "review", "level": 2}]
    assert before <= agent["connected_at"] <= now_ms()
    assert agent["fsm_state"] == "idle"


def test_agent_states_show_fsm_state_task_and_flags(hub):
    assert hub.api("GET", "/api/agents/states").body == {"agents": []}
    worker = hub.agent("worker", ["code"], name="W")
    hub.agent("idler")
    task_id = hub.submit(needed_capabilities=["code"])
    worker.recv("task_assign", task_id=task_id)

    reply = hub.api("GET", "/api/agents/states")
    assert reply.status == 200
    states = {s["agent_id"]: s for s in reply.body["agents"]}
    assert set(states) == {"worker", "idler"}
    assert all(set(s) == STATE_FIELDS | cluster_fields(hub) for s in states.values())
    assert states["worker"]["fsm_state"] == "assigned"
    assert states["worker"]["current_task_id"] == task_id
    assert states["worker"]["capabilities"] == ["code"]
    assert states["worker"]["name"] == "W"
    assert states["worker"]["flags"] == []
    assert states["idler"]["fsm_state"] == "idle"
    assert states["idler"]["current_task_id"] is None

    worker.send({"type": "task_accepted", "task_id": task_id})
    worker.recv("task_ack", status="accepted")
    one = hub.api("GET", "/api/agents/worker/state")
    assert one.status == 200
    assert set(one.body) == STATE_FIELDS | cluster_fields(hub)
    assert one.body["agent_id"] == "worker"
    assert one.body["fsm_state"] == "working"
    assert one.body["current_task_id"] == task_id


def test_agent_state_of_an_agent_not_connected_is_404(hub):
    reply = hub.api("GET", "/api/agents/ghost/state")
    assert reply.status == 404
    assert "error" in reply.body
    gone = hub.agent("gone")
    gone.close()
    wait_until(
        lambda: (r := hub.api("GET", "/api/agents/gone/state")).status == 404 or r,
        what="404 for a disconnected agent",
    )


# --- admin token routes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/admin/tokens", {"agent_id": "x"}),
        ("GET", "/admin/tokens", None),
        ("DELETE", "/admin/tokens/submitter", None),
    ],
)
def test_admin_routes_are_403_for_the_agent_role(hub, method, path, body):
    reply = hub.api(method, path, body)
    assert reply.status == 403, reply
    assert "error" in reply.body
    # nothing changed: the submitter's token still works
    assert hub.api("GET", "/api/tasks").status == 200


def test_admin_creates_lists_and_revokes_tokens(hub):
    created = hub.api("POST", "/admin/tokens", {"agent_id": "new-agent"}, token=hub.admin_token)
    assert created.status == 201, created
    assert set(created.body) == {"agent_id", "token"}
    assert created.body["agent_id"] == "new-agent"
    token = created.body["token"]
    assert re.fullmatch(r"[0-9a-f]{64}", token), token
    assert hub.api("GET", "/api/tasks", token=token).status == 200
    # an agent-role token: it may not manage tokens
    assert hub.api("GET", "/admin/tokens", token=token).status == 403

    admin2 = hub.api(
        "POST", "/admin/tokens", {"agent_id": "ops", "role": "admin"}, token=hub.admin_token
    )
    assert admin2.status == 201
    listing = hub.api("GET", "/admin/tokens", token=admin2.body["token"])
    assert listing.status == 200
    rows = listing.body["tokens"]
    assert all(set(row) == {"agent_id", "role", "token_prefix"} for row in rows)
    by_agent = {(row["agent_id"], row["role"]): row["token_prefix"] for row in rows}
    assert set(by_agent) == {
        ("submitter", "agent"),
        ("operator", "admin"),
        ("new-agent", "agent"),
        ("ops", "admin"),
    }
    prefix = by_agent["new-agent", "agent"]
    assert prefix and token.startswith(prefix) and len(prefix) < len(token)
    for secret in (token, admin2.body["token"], hub.token, hub.admin_token):
        assert secret not in str(listing.body)

    revoked = hub.api("DELETE", "/admin/tokens/new-agent", token=hub.admin_token)
    assert revoked.status == 200
    assert revoked.body == {"status": "revoked"}
    refused = hub.api("GET", "/api/tasks", token=token)
    assert refused.status == 401
    assert refused.body == {"error": "unauthorized"}
    remaining = hub.api("GET", "/admin/tokens", token=hub.admin_token).body["tokens"]
    assert "new-agent" not in {row["agent_id"] for row in remaining}


def test_revoke_removes_every_token_of_the_agent_and_refuses_websocket(hub):
    first = hub.api("POST", "/admin/tokens", {"agent_id": "a1"}, token=hub.admin_token).body
    second = hub.api("POST", "/admin/tokens", {"agent_id": "a1"}, token=hub.admin_token).body
    # both tokens identify a1 before the revoke
    for created in (first, second):
        assert hub.socket().identify("a1", created["token"])["type"] == "identified"
    assert hub.api("DELETE", "/admin/tokens/a1", token=hub.admin_token).status == 200
    for created in (first, second):
        assert hub.api("GET", "/api/tasks", token=created["token"]).status == 401
        answer = hub.socket().identify("a1", created["token"])
        assert answer == {"type": "error", "error": "invalid_token"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "agent_id"),
        ({"agent_id": ""}, "agent_id"),
        ({"agent_id": 7}, "agent_id"),
        ({"agent_id": "x", "role": "root"}, "role"),
    ],
)
def test_create_token_bad_body_is_400(hub, body, field):
    reply = hub.api("POST", "/admin/tokens", body, token=hub.admin_token)
    assert reply.status == 400, reply
    assert field in reply.body["error"]


# --- routes that do not exist ------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/nope"),
        ("GET", "/api"),
        ("GET", "/api/tasks/x/y/z"),
        ("POST", "/api/nothing"),
        ("GET", "/admin"),
    ],
)
def test_unknown_route_is_404_json(hub, method, path):
    reply = hub.api(method, path, {} if method == "POST" else None)
    assert reply.status == 404, reply
    assert "json" in reply.content_type
    assert isinstance(reply.body.get("error"), str)


@pytest.mark.parametrize(
    ("method", "path"), [("DELETE", "/api/tasks"), ("PUT", "/health"), ("POST", "/api/agents")]
)
def test_wrong_method_is_a_json_error(hub, method, path):
    reply = hub.api(method, path, {})
    assert reply.status == 405, reply
    assert isinstance(reply.body.get("error"), str)


def test_plain_http_on_the_websocket_route_is_a_json_error(hub):
    reply = hub.api("GET", "/ws", token=None)
    assert 400 <= reply.status < 500, reply
    assert "json" in reply.content_type, reply
    assert isinstance(reply.body.get("error"), str)
