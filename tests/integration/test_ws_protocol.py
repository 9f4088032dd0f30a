"""WebSocket: identify, presence and utility messages, bad frames."""

from __future__ import annotations

import contextlib
import json

import pytest

from tests.integration.helpers import MIB, cluster_fields, events, now_ms
from tests.waiting import wait_until


def test_identify_ok(hub):
    socket = hub.socket()
    token = hub.thread.create_token("a1")
    answer = socket.identify("a1", token, name="A1", status="idle", capabilities=["code"])
    assert answer == {"type": "identified", "agent_id": "a1"}
    assert [a["agent_id"] for a in hub.api("GET", "/api/agents").body["agents"]] == ["a1"]


@pytest.mark.parametrize(
    "token", [None, "", "0" * 64, "not-a-token"], ids=["missing", "empty", "wrong", "junk"]
)
def test_identify_with_a_bad_token_is_invalid_token(hub, token):
    socket = hub.socket()
    hub.thread.create_token("a1")
    assert socket.identify("a1", token) == {"type": "error", "error": "invalid_token"}
    # still open, still not identified
    socket.send({"type": "ping"})
    assert socket.recv("error") == {"type": "error", "error": "not_identified"}
    assert hub.api("GET", "/health").body["agents_connected"] == 0


def test_identify_with_a_revoked_token_is_invalid_token(hub):
    token = hub.thread.create_token("a1")
    assert hub.api("DELETE", "/admin/tokens/a1", token=hub.admin_token).status == 200
    assert hub.socket().identify("a1", token) == {"type": "error", "error": "invalid_token"}


def test_identify_with_another_agents_token_is_token_agent_mismatch(hub):
    token = hub.thread.create_token("a2")
    socket = hub.socket()
    assert socket.identify("a1", token) == {"type": "error", "error": "token_agent_mismatch"}
    # the connection stays usable: identify properly now
    assert socket.identify("a2", token) == {"type": "identified", "agent_id": "a2"}


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "ping"},
        {"type": "status", "status": "x"},
        {"type": "list_agents"},
        {"type": "task_accepted", "task_id": "task-1"},
        {"type": "task_complete", "task_id": "task-1", "generation": 1},
        {"type": "task_failed", "task_id": "task-1", "generation": 1, "error": "e"},
        {"type": "task_rejected", "task_id": "task-1"},
        {"type": "task_recovering", "task_id": "task-1"},
        {"type": "task_progress", "task_id": "task-1", "progress": 5},
    ],
    ids=lambda frame: frame["type"],
)
def test_any_message_before_identify_is_not_identified(hub, frame):
    socket = hub.socket()
    socket.send(frame)
    assert socket.recv() == {"type": "error", "error": "not_identified"}
    token = hub.thread.create_token("a1")
    assert socket.identify("a1", token)["type"] == "identified"


def test_unknown_extra_fields_are_ignored(hub):
    task_id = hub.submit()
    token = hub.thread.create_token("node-1")
    socket = hub.socket()
    answer = socket.identify(
        "node-1",
        token,
        protocol_version=2,
        client_type="sidecar",
        capabilities=[],
        extra={"nested": True},
    )
    assert answer == {"type": "identified", "agent_id": "node-1"}
    assign = socket.recv("task_assign", task_id=task_id)
    socket.send({"type": "task_accepted", "task_id": task_id, "client_time": 12, "note": "x"})
    socket.recv("task_ack", task_id=task_id, status="accepted")
    socket.send({"type": "ping", "seq": 4})
    socket.recv("pong")
    socket.send(
        {"type": "task_complete", "task_id": task_id, "generation": assign["generation"], "x": [1]}
    )
    socket.recv("task_ack", task_id=task_id, status="complete")
    assert socket.pending("error") == []


def test_capabilities_as_strings_and_as_objects(hub):
    needs_both = hub.submit("both", needed_capabilities=["code", "review"])
    strings = hub.agent("strings", ["code"])
    objects = hub.agent("objects", [{"name": "code", "version": 3}, {"name": "review"}])
    mixed = hub.agent("mixed", ["review", {"name": "docs"}])
    objects.recv("task_assign", task_id=needs_both)
    needs_docs = hub.submit("docs", needed_capabilities=["docs"])
    mixed.recv("task_assign", task_id=needs_docs)
    strings.round_trip()
    assert strings.pending("task_assign") == []
    agents = {a["agent_id"]: a for a in hub.api("GET", "/api/agents").body["agents"]}
    assert agents["objects"]["capabilities"] == [{"name": "code", "version": 3}, {"name": "review"}]
    assert agents["mixed"]["capabilities"] == ["review", {"name": "docs"}]


def test_ping_gets_pong_with_a_timestamp(hub):
    agent = hub.agent("a1")
    before = now_ms()
    agent.send({"type": "ping"})
    pong = agent.recv("pong")
    assert set(pong) == {"type", "timestamp"}
    assert isinstance(pong["timestamp"], int)
    assert before - 1000 <= pong["timestamp"] <= now_ms() + 1000


def test_status_is_acknowledged_and_shown(hub):
    agent = hub.agent("a1", status="idle")
    agent.send({"type": "status", "status": "reading the code"})
    assert agent.recv("status_updated") == {"type": "status_updated"}
    (shown,) = hub.api("GET", "/api/agents").body["agents"]
    assert shown["status"] == "reading the code"
    agent.send({"type": "list_agents"})
    (listed,) = agent.recv("agents")["agents"]
    assert listed["status"] == "reading the code"


def test_list_agents(hub):
    a1 = hub.agent("a1", ["code"], name="One")
    hub.agent("a2", [{"name": "review"}])
    a1.send({"type": "list_agents"})
    reply = a1.recv("agents")
    assert set(reply) == {"type", "agents"}
    agents = {a["agent_id"]: a for a in reply["agents"]}
    assert set(agents) == {"a1", "a2"}
    for agent in agents.values():
        assert set(agent) == {
            "agent_id",
            "name",
            "status",
            "capabilities",
            "connected_at",
            "fsm_state",
        } | cluster_fields(hub)
        assert agent["fsm_state"] == "idle"
    assert agents["a1"]["name"] == "One"
    assert agents["a1"]["capabilities"] == ["code"]
    assert agents["a2"]["capabilities"] == [{"name": "review"}]


def test_every_identified_agent_hears_who_joins_leaves_and_changes_status(hub):
    first = hub.agent("first")
    second = hub.agent("second")
    assert first.recv("agent_joined")["agent"]["agent_id"] == "second"
    newcomer = hub.agent("newcomer", ["code"], name="New")
    for agent in (first, second):
        joined = agent.recv("agent_joined")
        assert joined["agent"]["agent_id"] == "newcomer"
        assert joined["agent"]["name"] == "New"
        assert joined["agent"]["capabilities"] == ["code"]
        assert "connected_at" in joined["agent"]
    newcomer.send({"type": "status", "status": "reviewing"})
    for agent in (first, second):
        changed = agent.recv("status_changed")
        assert (changed["agent"]["agent_id"], changed["agent"]["status"]) == (
            "newcomer",
            "reviewing",
        )
    newcomer.close()
    for agent in (first, second):
        assert agent.recv("agent_left") == {"type": "agent_left", "agent_id": "newcomer"}
    # nobody hears about itself
    newcomer_heard = newcomer.pending("agent_joined") + newcomer.pending("status_changed")
    assert [f for f in newcomer_heard if f["agent"]["agent_id"] == "newcomer"] == []


def test_an_agent_hears_only_of_changes_after_its_own_identified(hub):
    hub.agent("before")
    late = hub.agent("late")  # within the 50 ms in which "before"'s join is still pending
    hub.agent("after")
    assert late.recv("agent_joined")["agent"]["agent_id"] == "after"
    assert [f["agent"]["agent_id"] for f in late.pending("agent_joined")] == []


def test_identified_comes_before_any_presence_frame(hub):
    hub.agent("present")
    for n in range(20):
        socket = hub.socket()
        socket.send(
            {"type": "identify", "agent_id": f"n{n}", "token": hub.thread.create_token(f"n{n}")}
        )
        assert socket.recv()["type"] == "identified"


def test_an_agent_may_opt_out_of_presence(hub):
    quiet = hub.agent("quiet", presence=False)
    hub.agent("loud").close()
    quiet.round_trip()  # every announcement above was flushed before this pong
    wait_until(lambda: hub.api("GET", "/health").body["agents_connected"] == 1, what="loud gone")
    quiet.round_trip()
    assert quiet.pending("agent_joined") == quiet.pending("agent_left") == []


def test_presence_must_be_a_boolean(hub):
    socket = hub.socket()
    token = hub.thread.create_token("a1")
    answer = socket.identify("a1", token, presence="no")
    assert answer == {"type": "error", "error": "invalid_field: presence must be a boolean"}


# --- bad frames: error frame, connection and tasks unchanged ---------------------------

BAD_FRAMES = [
    pytest.param("{not json", "invalid_json", id="invalid-json"),
    pytest.param('["task_accepted"]', None, id="json-array"),
    pytest.param('{"task_id": "x"}', "type", id="no-type"),
    pytest.param('{"type": 5}', "type", id="type-not-string"),
    pytest.param('{"type": "launch_rockets"}', "launch_rockets", id="unknown-type"),
    pytest.param(
        '{"type": "task_complete", "task_id": "TASK"}', "generation", id="missing-generation"
    ),
    pytest.param('{"type": "task_complete", "generation": 1}', "task_id", id="missing-task-id"),
    pytest.param(
        '{"type": "task_complete", "task_id": "TASK", "generation": "1"}',
        "generation",
        id="generation-string",
    ),
    pytest.param(
        '{"type": "task_failed", "task_id": "TASK", "generation": 1.0}',
        "generation",
        id="generation-float",
    ),
    pytest.param(
        '{"type": "task_complete", "task_id": "TASK", "generation": true}',
        "generation",
        id="generation-bool",
    ),
    pytest.param('{"type": "task_accepted", "task_id": 7}', "task_id", id="task-id-int"),
    pytest.param(
        '{"type": "task_complete", "task_id": "TASK", "generation": 1, "tokens_used": "many"}',
        "tokens_used",
        id="tokens-used-string",
    ),
    pytest.param('{"type": "status"}', "status", id="status-missing"),
    pytest.param('{"type": "status", "status": 3}', "status", id="status-int"),
    pytest.param(
        '{"type": "identify", "agent_id": "a1", "token": "T", "capabilities": "code"}',
        "capabilities",
        id="capabilities-string",
    ),
    pytest.param(
        '{"type": "identify", "agent_id": "a1", "token": "T", "capabilities": [{"x": 1}]}',
        "capabilities",
        id="capability-without-name",
    ),
]


@pytest.mark.parametrize(("text", "named"), BAD_FRAMES)
def test_bad_frame_gets_an_error_and_changes_nothing(hub, text, named):
    task_id = hub.submit()
    agent = hub.agent("a1")
    assign = agent.recv("task_assign", task_id=task_id)
    before = hub.task(task_id)

    agent.send_text(text.replace("TASK", task_id))
    error = agent.recv("error")
    assert set(error) == {"type", "error"}
    assert isinstance(error["error"], str) and error["error"]
    if named is not None:
        assert named in error["error"], error

    agent.round_trip()  # the connection stays open
    assert hub.task(task_id) == before
    # and the assignment still works as before
    agent.send({"type": "task_complete", "task_id": task_id, "generation": assign["generation"]})
    agent.recv("task_ack", task_id=task_id, status="complete")
    assert hub.api("GET", "/api/agents/a1/state").body["fsm_state"] == "idle"


def test_frame_over_one_mib_gets_an_error_and_changes_nothing(hub):
    task_id = hub.submit()
    agent = hub.agent("a1")
    assign = agent.recv("task_assign", task_id=task_id)
    before = hub.task(task_id)
    frame = {
        "type": "task_complete",
        "task_id": task_id,
        "generation": assign["generation"],
        "result": "x" * MIB,
    }
    agent.send(frame)
    error = agent.recv("error")
    assert error["type"] == "error" and error["error"]
    agent.round_trip()
    assert hub.task(task_id) == before
    assert agent.pending("task_ack") == []


def test_frame_between_one_and_two_mib_gets_an_error_and_the_connection_stays(hub):
    task_id = hub.submit()
    agent = hub.agent("a1")
    assign = agent.recv("task_assign", task_id=task_id)
    before = hub.task(task_id)
    agent.send({"type": "ping", "padding": "x" * (MIB + MIB // 2)})
    assert agent.recv("error")["error"].startswith("frame_too_large")
    agent.round_trip()
    assert hub.task(task_id) == before
    agent.send({"type": "task_complete", "task_id": task_id, "generation": assign["generation"]})
    agent.recv("task_ack", task_id=task_id, status="complete")


def test_frame_over_two_mib_is_not_read_and_ends_the_connection_as_a_disconnect(hub):
    task_id = hub.submit()
    agent = hub.agent("a1")
    agent.recv("task_assign", task_id=task_id)
    with contextlib.suppress(AssertionError):  # the hub may close before the write ends
        agent.send({"type": "ping", "padding": "x" * (20 * MIB)})
    # Tornado sends 1009 and drops the TCP connection at once, so the close
    # frame is often lost while the client is still writing.
    assert agent.wait_closed() in (1009, None)
    wait_until(
        lambda: [e["cause"] for e in events(hub.task(task_id), "reclaimed")] == ["disconnected"],
        what="the task reclaimed as disconnected",
    )


def test_bad_frame_before_identify_gets_an_error_and_identify_still_works(hub):
    socket = hub.socket()
    socket.send_text("{{{")
    assert socket.recv("error")["error"]
    socket.send_text(json.dumps({"type": "identify"}))
    assert "agent_id" in socket.recv("error")["error"]
    token = hub.thread.create_token("a1")
    assert socket.identify("a1", token)["type"] == "identified"


def test_a_second_identify_on_one_connection_is_refused(hub):
    agent = hub.agent("a1")
    token = hub.thread.create_token("a1")
    agent.send({"type": "identify", "agent_id": "a1", "token": token})
    assert agent.recv("error")["error"]
    agent.round_trip()
    assert hub.api("GET", "/health").body["agents_connected"] == 1


def test_an_unchanged_status_is_not_announced_again(hub):
    listener = hub.agent("listener")
    talker = hub.agent("talker")
    listener.recv("agent_joined")
    for _ in range(3):
        talker.send({"type": "status", "status": "busy"})
        talker.recv("status_updated")
    hub.agent("marker")  # its join is announced after any status change above
    assert listener.recv("agent_joined")["agent"]["agent_id"] == "marker"
    assert [f["agent"]["status"] for f in listener.pending("status_changed")] == ["busy"]


@pytest.mark.parametrize("field", ["name", "status"])
def test_names_and_statuses_shown_to_every_agent_are_bounded(hub, field):
    socket = hub.socket()
    answer = socket.identify("a1", hub.thread.create_token("a1"), **{field: "x" * 256})
    assert answer == {
        "type": "error",
        "error": f"invalid_field: {field} must be at most 255 characters",
    }
    agent = hub.agent("a2")
    agent.send({"type": "status", "status": "y" * 1_000_000})
    assert agent.recv("error")["error"] == "invalid_field: status must be at most 255 characters"
    agent.round_trip()
