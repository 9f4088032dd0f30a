"""The two task rules of "Watching the hub", over the wire: a bad ``progress`` is an
error frame that changes nothing; a dead-lettered task names its last holder."""

from __future__ import annotations

from tests.integration.helpers import fail_to_dead_letter


def test_progress_must_be_a_number_from_0_to_100_else_nothing_changes(hub):
    task_id = hub.submit()
    agent = hub.agent("w1")
    agent.recv("task_assign", task_id=task_id)
    agent.send({"type": "task_accepted", "task_id": task_id})
    agent.recv("task_ack", task_id=task_id)
    before = hub.task(task_id)

    for bad in ("50", -1, 101, True):
        frame = {"type": "task_progress", "task_id": task_id, "status": "blocked", "progress": bad}
        agent.send(frame)
        error = agent.recv("error")
        assert error["error"].startswith("invalid_field: progress must be a number"), error
    agent.round_trip()
    state = hub.api("GET", "/api/agents/w1/state", token=hub.admin_token).body
    assert state["fsm_state"] == "working", "a refused frame does not block the agent"
    assert hub.task(task_id) == before

    agent.send({"type": "task_progress", "task_id": task_id, "progress": 75})
    agent.round_trip()
    assert agent.pending("error") == []


def test_a_dead_lettered_task_names_its_last_holder_who_may_still_read_it(hub):
    task_id = hub.submit(max_retries=0)
    holder = hub.agent("w1")
    fail_to_dead_letter(holder, task_id)
    w1 = hub.thread.create_token("w1")

    task = hub.api("GET", f"/api/tasks/{task_id}").body
    assert (task["status"], task["assigned_to"], task["assigned_at"]) == ("dead_letter", "w1", None)
    assert hub.api("GET", f"/api/tasks/{task_id}", token=w1).status == 200
    dead = hub.api("GET", "/api/tasks/dead-letter", token=w1).body["tasks"]
    assert [t["id"] for t in dead] == [task_id]
    other = hub.thread.create_token("w2")
    assert hub.api("GET", f"/api/tasks/{task_id}", token=other).status == 404
    assert task["history"][-1]["event"] == "dead_letter"

    holder.close()  # or the retried task goes straight back to it
    assert hub.api("POST", f"/api/tasks/{task_id}/retry").status == 200
    assert hub.task(task_id)["assigned_to"] is None
