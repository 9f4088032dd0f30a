"""WebSocket task lifecycle: assign, accept, complete, fail, reject, recover, fencing,
disconnect and replacement."""

from __future__ import annotations

import pytest

from tests.integration.helpers import events, now_ms


def complete(agent, assign, **fields):
    agent.send(
        {
            "type": "task_complete",
            "task_id": assign["task_id"],
            "generation": assign["generation"],
            **fields,
        }
    )


def test_task_assign_shape(hub):
    complete_by = now_ms() + 3_600_000
    task_id = hub.submit("fix the bug", metadata={"repo": "r", "line": 3}, complete_by=complete_by)
    plain_id = hub.submit("second")
    before = now_ms()
    agent = hub.agent("a1")
    assign = agent.recv("task_assign")
    assert set(assign) == {
        "type",
        "task_id",
        "description",
        "metadata",
        "generation",
        "assigned_at",
        "complete_by",
    }
    assert assign["task_id"] == task_id
    assert assign["description"] == "fix the bug"
    assert assign["metadata"] == {"repo": "r", "line": 3}
    assert assign["generation"] == 1
    assert isinstance(assign["assigned_at"], int)
    assert before - 1000 <= assign["assigned_at"] <= now_ms()
    assert assign["complete_by"] == complete_by

    task = hub.task(task_id)
    assert task["status"] == "assigned"
    assert task["assigned_to"] == "a1"
    assert task["assigned_at"] == assign["assigned_at"]
    assert task["generation"] == 1
    assert events(task) == ["queued", "assigned"]

    complete(agent, assign)
    agent.recv("task_ack", task_id=task_id, status="complete")
    second = agent.recv("task_assign", task_id=plain_id)
    assert second["complete_by"] is None
    assert second["metadata"] == {}


def test_accept_then_complete(hub):
    task_id = hub.submit()
    agent = hub.agent("a1")
    assign = agent.recv("task_assign", task_id=task_id)
    agent.send({"type": "task_accepted", "task_id": task_id})
    assert agent.recv("task_ack") == {"type": "task_ack", "task_id": task_id, "status": "accepted"}
    agent.send({"type": "task_progress", "task_id": task_id, "progress": 50})
    complete(agent, assign, result={"summary": "done", "files": ["a.py"]}, tokens_used=120)
    assert agent.recv("task_ack") == {"type": "task_ack", "task_id": task_id, "status": "complete"}

    task = hub.api("GET", f"/api/tasks/{task_id}").body
    assert task["status"] == "completed"
    assert task["result"] == {"summary": "done", "files": ["a.py"]}
    assert task["tokens_used"] == 120
    assert task["assigned_to"] == "a1"  # still names who completed it
    assert events(task).count("completed") == 1
    assert events(task) == ["queued", "assigned", "completed"]
    assert hub.api("GET", "/api/agents/a1/state").body["fsm_state"] == "idle"


def test_complete_without_accepting_first(hub):
    task_id = hub.submit()
    agent = hub.agent("a1")
    assign = agent.recv("task_assign", task_id=task_id)
    complete(agent, assign, result="plain text result")
    agent.recv("task_ack", task_id=task_id, status="complete")
    task = hub.task(task_id)
    assert task["result"] == "plain text result"
    assert task["tokens_used"] is None


def test_a_second_complete_is_refused_and_history_has_one_completed(hub):
    task_id = hub.submit()
    agent = hub.agent("a1")
    assign = agent.recv("task_assign", task_id=task_id)
    complete(agent, assign, result=1)
    agent.recv("task_ack", task_id=task_id, status="complete")
    complete(agent, assign, result=2)
    assert agent.recv("error") == {"type": "error", "error": "task_complete_failed: not_assigned"}
    task = hub.task(task_id)
    assert task["result"] == 1
    assert events(task).count("completed") == 1


def test_an_agent_holds_one_task_at_a_time(hub):
    first, second = hub.submit("1"), hub.submit("2")
    agent = hub.agent("a1")
    assign = agent.recv("task_assign", task_id=first)
    agent.round_trip()
    assert agent.pending("task_assign") == []
    assert hub.task(second)["status"] == "queued"
    complete(agent, assign)
    agent.recv("task_ack", task_id=first, status="complete")
    assert agent.recv("task_assign")["task_id"] == second


# --- fencing: task_complete / task_failed that do not fit ------------------------------


@pytest.mark.parametrize(
    ("kind", "prefix"),
    [("task_complete", "task_complete_failed"), ("task_failed", "task_fail_failed")],
)
def test_stale_generation(hub, kind, prefix):
    task_id = hub.submit()
    agent = hub.agent("a1")
    assign = agent.recv("task_assign", task_id=task_id)
    before = hub.task(task_id)
    for generation in (assign["generation"] + 1, assign["generation"] - 1, 99):
        agent.send({"type": kind, "task_id": task_id, "generation": generation, "error": "e"})
        assert agent.recv("error") == {"type": "error", "error": f"{prefix}: stale_generation"}
    assert hub.task(task_id) == before


@pytest.mark.parametrize(
    ("kind", "prefix"),
    [("task_complete", "task_complete_failed"), ("task_failed", "task_fail_failed")],
)
def test_not_assigned(hub, kind, prefix):
    held = hub.submit("held by a1")
    queued = hub.submit("nobody can take it", needed_capabilities=["none"])
    holder = hub.agent("a1")
    assign = holder.recv("task_assign", task_id=held)
    other = hub.agent("a2")
    before_held, before_queued = hub.task(held), hub.task(queued)

    # another agent holds it
    other.send({"type": kind, "task_id": held, "generation": assign["generation"], "error": "e"})
    assert other.recv("error") == {"type": "error", "error": f"{prefix}: not_assigned"}
    # queued, not assigned to anyone
    other.send({"type": kind, "task_id": queued, "generation": 0, "error": "e"})
    assert other.recv("error") == {"type": "error", "error": f"{prefix}: not_assigned"}
    assert hub.task(held) == before_held
    assert hub.task(queued) == before_queued

    # completed
    complete(holder, assign)
    holder.recv("task_ack", task_id=held, status="complete")
    holder.send({"type": kind, "task_id": held, "generation": assign["generation"], "error": "e"})
    assert holder.recv("error") == {"type": "error", "error": f"{prefix}: not_assigned"}
    assert events(hub.task(held)).count("completed") == 1


@pytest.mark.parametrize(
    ("kind", "prefix"),
    [("task_complete", "task_complete_failed"), ("task_failed", "task_fail_failed")],
)
def test_not_assigned_for_a_dead_letter_task(hub, kind, prefix):
    task_id = hub.submit(max_retries=0)
    agent = hub.agent("a1")
    assign = agent.recv("task_assign", task_id=task_id)
    agent.send({"type": "task_failed", "task_id": task_id, "generation": 1, "error": "x"})
    agent.recv("task_ack", task_id=task_id, status="dead_letter")
    before = hub.task(task_id)
    agent.send({"type": kind, "task_id": task_id, "generation": assign["generation"], "error": "e"})
    assert agent.recv("error") == {"type": "error", "error": f"{prefix}: not_assigned"}
    assert hub.task(task_id) == before


@pytest.mark.parametrize(
    ("kind", "prefix"),
    [("task_complete", "task_complete_failed"), ("task_failed", "task_fail_failed")],
)
def test_not_found(hub, kind, prefix):
    agent = hub.agent("a1")
    agent.send({"type": kind, "task_id": "task-nosuchtask", "generation": 1, "error": "e"})
    assert agent.recv("error") == {"type": "error", "error": f"{prefix}: not_found"}
    agent.round_trip()
    assert hub.api("GET", "/api/tasks").body["count"] == 0


# --- failures, retries, dead letter ---------------------------------------------------------


def test_failures_retry_until_max_retries_then_dead_letter(hub):
    task_id = hub.submit(max_retries=2)
    agent = hub.agent("a1")

    first = agent.recv("task_assign", task_id=task_id)
    agent.send({"type": "task_accepted", "task_id": task_id})
    agent.recv("task_ack", status="accepted")
    agent.send(
        {
            "type": "task_failed",
            "task_id": task_id,
            "generation": first["generation"],
            "error": "compile error",
        }
    )
    assert agent.recv("task_ack") == {"type": "task_ack", "task_id": task_id, "status": "retried"}

    second = agent.recv("task_assign", task_id=task_id)  # back in the queue, reassigned
    assert second["generation"] == first["generation"] + 1
    task = hub.task(task_id)
    assert task["retry_count"] == 1
    assert task["last_error"] == "compile error"
    assert task["status"] == "assigned"

    agent.send(
        {
            "type": "task_failed",
            "task_id": task_id,
            "generation": second["generation"],
            "reason": "tests fail",
        }
    )
    assert agent.recv("task_ack") == {
        "type": "task_ack",
        "task_id": task_id,
        "status": "dead_letter",
    }

    task = hub.api("GET", f"/api/tasks/{task_id}").body
    assert task["status"] == "dead_letter"
    assert task["retry_count"] == 2
    assert task["last_error"] == "tests fail"
    assert events(task) == ["queued", "assigned", "retry", "assigned", "dead_letter"]
    assert [t["id"] for t in hub.api("GET", "/api/tasks/dead-letter").body["tasks"]] == [task_id]
    agent.round_trip()
    assert agent.pending("task_assign") == []


def test_max_retries_zero_means_the_first_failure_is_final(hub):
    task_id = hub.submit(max_retries=0)
    agent = hub.agent("a1")
    assign = agent.recv("task_assign", task_id=task_id)
    agent.send(
        {
            "type": "task_failed",
            "task_id": task_id,
            "generation": assign["generation"],
            "reason": "no",
        }
    )
    assert agent.recv("task_ack") == {
        "type": "task_ack",
        "task_id": task_id,
        "status": "dead_letter",
    }
    task = hub.task(task_id)
    assert task["status"] == "dead_letter"
    assert task["retry_count"] == 1
    assert events(task) == ["queued", "assigned", "dead_letter"]


def test_failed_with_default_max_retries_dead_letters_on_the_third(hub):
    task_id = hub.submit()
    agent = hub.agent("a1")
    for expected in ("retried", "retried", "dead_letter"):
        assign = agent.recv("task_assign", task_id=task_id)
        agent.send(
            {
                "type": "task_failed",
                "task_id": task_id,
                "generation": assign["generation"],
                "error": "e",
            }
        )
        agent.recv("task_ack", task_id=task_id, status=expected)
    assert hub.task(task_id)["retry_count"] == 3


# --- rejection --------------------------------------------------------------------------------


def test_rejected_task_goes_back_without_spending_a_retry(hub):
    task_id = hub.submit(max_retries=1)
    picky = hub.agent("picky")
    assign = picky.recv("task_assign", task_id=task_id)
    willing = hub.agent("willing")
    picky.send({"type": "task_rejected", "task_id": task_id, "reason": "busy"})
    assert picky.recv("task_ack") == {"type": "task_ack", "task_id": task_id, "status": "rejected"}

    again = willing.recv("task_assign", task_id=task_id)  # reassigned
    assert again["generation"] == assign["generation"] + 1
    task = hub.task(task_id)
    assert task["retry_count"] == 0
    assert task["assigned_to"] == "willing"
    assert events(task) == ["queued", "assigned", "rejected", "assigned"]
    assert "busy" in str(events(task, "rejected"))

    # the retry budget is whole: one failure still ends in the dead letter, not before
    willing.send(
        {"type": "task_failed", "task_id": task_id, "generation": again["generation"], "error": "e"}
    )
    willing.recv("task_ack", task_id=task_id, status="dead_letter")


def test_reject_after_accepting_and_reject_of_another_agents_task(hub):
    task_id = hub.submit()
    a1 = hub.agent("a1")
    a1.recv("task_assign", task_id=task_id)
    a2 = hub.agent("a2")
    a2.send({"type": "task_rejected", "task_id": task_id, "reason": "mine?"})
    assert a2.recv("error")["error"]
    assert hub.task(task_id)["assigned_to"] == "a1"

    a1.send({"type": "task_accepted", "task_id": task_id})
    a1.recv("task_ack", status="accepted")
    a1.send({"type": "task_rejected", "task_id": task_id})
    a1.recv("task_ack", task_id=task_id, status="rejected")
    a2.recv("task_assign", task_id=task_id)
    assert hub.task(task_id)["retry_count"] == 0


# --- recovery ---------------------------------------------------------------------------------


def test_recovering_a_held_task_continues_with_the_same_generation(hub):
    task_id = hub.submit()
    agent = hub.agent("a1")
    assign = agent.recv("task_assign", task_id=task_id)
    agent.send({"type": "task_recovering", "task_id": task_id})
    assert agent.recv("task_continue") == {
        "type": "task_continue",
        "task_id": task_id,
        "generation": assign["generation"],
    }
    complete(agent, assign)
    agent.recv("task_ack", task_id=task_id, status="complete")


def test_recovering_a_task_not_held_is_reassign(hub):
    held = hub.submit("held by a1")
    a1 = hub.agent("a1")
    a1.recv("task_assign", task_id=held)
    a2 = hub.agent("a2")
    done = hub.submit("a2 completes it")
    assign = a2.recv("task_assign", task_id=done)
    complete(a2, assign)
    a2.recv("task_ack", task_id=done, status="complete")

    for task_id in (held, done, "task-nosuchtask"):
        a2.send({"type": "task_recovering", "task_id": task_id})
        assert a2.recv("task_reassign") == {"type": "task_reassign", "task_id": task_id}
    assert hub.task(held)["assigned_to"] == "a1"
    assert hub.task(held)["generation"] == 1


# --- disconnect and replacement ---------------------------------------------------------------


def test_disconnect_puts_the_task_back_at_once(hub):
    task_id = hub.submit()
    leaver = hub.agent("leaver")
    leaver.recv("task_assign", task_id=task_id)
    leaver.send({"type": "task_accepted", "task_id": task_id})
    leaver.recv("task_ack", status="accepted")
    other = hub.agent("other")
    leaver.close()
    again = other.recv("task_assign", task_id=task_id)
    assert again["generation"] == 2
    task = hub.task(task_id)
    assert events(task) == ["queued", "assigned", "reclaimed", "assigned"]
    (reclaimed,) = events(task, "reclaimed")
    assert reclaimed["cause"] == "disconnected"
    assert task["retry_count"] == 0


def test_second_connection_with_the_same_agent_id_replaces_the_first(hub):
    task_id = hub.submit()
    old = hub.agent("a1")
    old_assign = old.recv("task_assign", task_id=task_id)
    old.send({"type": "task_accepted", "task_id": task_id})
    old.recv("task_ack", status="accepted")

    new = hub.agent("a1")
    old.wait_closed()
    again = new.recv("task_assign", task_id=task_id)
    assert again["generation"] == old_assign["generation"] + 1
    task = hub.task(task_id)
    assert task["assigned_to"] == "a1"
    assert events(task) == ["queued", "assigned", "reclaimed", "assigned"]
    (reclaimed,) = events(task, "reclaimed")
    assert reclaimed["cause"] == "replaced"

    # the old assignment is fenced off; the new one completes
    complete(new, old_assign)
    assert new.recv("error") == {"type": "error", "error": "task_complete_failed: stale_generation"}
    complete(new, again)
    new.recv("task_ack", task_id=task_id, status="complete")
    agents = hub.api("GET", "/api/agents").body["agents"]
    assert [a["agent_id"] for a in agents] == ["a1"]
    assert hub.api("GET", "/health").body["agents_connected"] == 1
