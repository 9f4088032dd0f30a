"""Cancellation against a real hub (PROTOCOL.md Part 4): ``POST /api/tasks/{id}/cancel``
for queued, assigned and finished tasks, who may cancel, the ``task_cancelled`` push to
the holder (cancel, stuck, overdue, acceptance timeout), and what knows the new status."""

from __future__ import annotations

import threading

import pytest

from tests.integration.helpers import HubProcess, WsAgent, events, fail_to_dead_letter, http, now_ms
from tests.integration.helpers import new_token as cli_token
from tests.integration.sse import SseClient
from tests.integration.test_analytics_metrics import scrape


def cancel(hub, task_id, body=None, token=None, **kw):
    kwargs = {} if token is None else {"token": token}
    return hub.api("POST", f"/api/tasks/{task_id}/cancel", body, **kwargs, **kw)


def accepted(agent, task_id):
    """Take the offer of ``task_id`` and accept it; its assignment frame."""
    assign = agent.recv("task_assign", task_id=task_id)
    agent.send({"type": "task_accepted", "task_id": task_id})
    agent.recv("task_ack", task_id=task_id, status="accepted")
    return assign


def fsm_state(hub, agent_id):
    states = {s["agent_id"]: s for s in hub.api("GET", "/api/agents/states").body["agents"]}
    return states[agent_id]["fsm_state"]


def test_a_queued_task_is_cancelled_for_good(hub):
    task_id = hub.submit("never mind")
    reply = cancel(hub, task_id, {"reason": "changed my mind"})
    assert reply.status == 200, reply
    assert reply.body == {"status": "cancelled", "task_id": task_id, "previous_status": "queued"}

    task = hub.task(task_id)
    assert task["status"] == "cancelled"
    assert task["assigned_to"] is None and task["effective_priority"] is None
    assert events(task) == ["queued", "cancelled"]
    assert events(task, "cancelled")[0] == {
        "cancelled_by": "submitter",
        "reason": "changed my mind",
        "previous_status": "queued",
        "agent_id": None,
    }

    # Never assigned: an idle agent gets the next task, not the cancelled one.
    agent = hub.agent("a1")
    later = hub.submit("still wanted")
    agent.recv("task_assign", task_id=later)
    assert agent.pending("task_assign") == []
    assert hub.task(task_id)["status"] == "cancelled"


def test_listings_filters_and_stats_know_cancelled(hub):
    kept, dropped = hub.submit("kept"), hub.submit("dropped", priority="high")
    assert cancel(hub, dropped).status == 200

    listed = hub.api("GET", "/api/tasks?status=cancelled").body["tasks"]
    assert [task["id"] for task in listed] == [dropped]
    queued = hub.api("GET", "/api/tasks?status=queued").body["tasks"]
    assert [task["id"] for task in queued] == [kept]
    stats = hub.api("GET", "/api/tasks/stats").body
    assert stats["by_status"]["cancelled"] == 1
    assert stats["by_status"]["queued"] == 1
    assert stats["by_priority"] == {"urgent": 0, "high": 1, "normal": 1, "low": 0}


def test_the_holder_is_told_at_once_and_its_late_report_is_refused(hub):
    agent = hub.agent("a1")
    task_id = hub.submit("long job")
    assign = accepted(agent, task_id)
    assert fsm_state(hub, "a1") == "working"

    reply = cancel(hub, task_id, {"reason": "superseded"})
    assert reply.body == {"status": "cancelled", "task_id": task_id, "previous_status": "assigned"}
    pushed = agent.recv("task_cancelled", task_id=task_id)
    assert pushed["reason"] == "superseded"
    assert abs(pushed["timestamp"] - now_ms()) < 60_000
    assert fsm_state(hub, "a1") == "idle"

    agent.send({"type": "task_complete", "task_id": task_id, "generation": assign["generation"]})
    refused = agent.recv("error")
    assert refused["error"] == "task_complete_failed: not_assigned"
    task = hub.task(task_id)
    assert task["status"] == "cancelled" and task["result"] is None
    assert task["assigned_to"] == "a1"  # like the dead letter: who held it last
    assert events(task, "cancelled")[0]["agent_id"] == "a1"

    # Idle again, and offered other work.
    following = hub.submit("next")
    accepted(agent, following)


def test_an_offered_task_not_yet_accepted_is_cancelled_with_the_default_reason(hub):
    agent = hub.agent("a1")
    task_id = hub.submit()
    agent.recv("task_assign", task_id=task_id)
    reply = cancel(hub, task_id)  # no body: the reason is optional
    assert reply.body["previous_status"] == "assigned"
    assert agent.recv("task_cancelled", task_id=task_id)["reason"] == "cancelled"
    assert events(hub.task(task_id), "cancelled")[0]["reason"] is None
    agent.send({"type": "task_accepted", "task_id": task_id})
    assert agent.recv("error")["error"] == "task_accept_failed: not_assigned"


def test_a_finished_task_is_not_cancelled_and_nothing_changes(hub):
    agent = hub.agent("a1")
    done = hub.submit("done")
    assign = accepted(agent, done)
    agent.send({"type": "task_complete", "task_id": done, "generation": assign["generation"]})
    agent.recv("task_ack", task_id=done, status="complete")
    doomed = hub.submit("doomed", max_retries=1)
    fail_to_dead_letter(agent, doomed)
    gone = hub.submit("gone")
    # The agent is idle: "gone" is offered at once, so take it and cancel it.
    agent.recv("task_assign", task_id=gone)
    assert cancel(hub, gone).status == 200

    for task_id, status in [(done, "completed"), (doomed, "dead_letter"), (gone, "cancelled")]:
        before = hub.task(task_id)
        reply = cancel(hub, task_id, {"reason": "too late"})
        assert reply.status == 409, reply
        assert reply.body == {"error": "task_finished", "status": status}
        assert hub.task(task_id) == before


def test_who_may_cancel(hub):
    submitter_task = hub.submit("mine")
    stranger = hub.thread.create_token("stranger")
    viewer = hub.thread.create_token("watcher", role="viewer")
    holder = hub.agent("holder")
    holder.recv("task_assign", task_id=submitter_task)

    assert cancel(hub, submitter_task, token=stranger).body == {"error": "task_not_found"}
    assert cancel(hub, submitter_task, token=stranger).status == 404
    held_token = hub.thread.create_token("holder")
    assert cancel(hub, submitter_task, token=held_token).status == 403
    assert cancel(hub, submitter_task, token=viewer).status == 403
    assert cancel(hub, "task-0123456789abcdef").status == 404
    assert hub.api("POST", f"/api/tasks/{submitter_task}/cancel", token=None).status == 401
    assert hub.task(submitter_task)["status"] == "assigned"

    reply = cancel(hub, submitter_task, {"reason": "ops"}, token=hub.admin_token)
    assert reply.status == 200
    assert events(hub.task(submitter_task), "cancelled")[0]["cancelled_by"] == "operator"
    assert holder.recv("task_cancelled", task_id=submitter_task)["reason"] == "ops"


@pytest.mark.parametrize(
    "body, error",
    [
        ({"reason": 7}, "invalid_field"),
        ({"reason": ""}, "invalid_field"),
        ({"reason": "x" * 1001}, "invalid_field"),
        ([], "invalid_body"),
        ("{not json", "invalid_json"),
    ],
)
def test_a_bad_body_is_refused_and_nothing_changes(hub, body, error):
    task_id = hub.submit()
    if isinstance(body, str):
        reply = http(
            "POST", f"{hub.http_url}/api/tasks/{task_id}/cancel", raw=body.encode(), token=hub.token
        )
    else:
        reply = cancel(hub, task_id, body)
    assert reply.status == 400, reply
    assert reply.body["error"].startswith(error), reply.body
    assert hub.task(task_id)["status"] == "queued"


def test_stuck_task_taken_from_a_connected_agent_is_pushed(make_hub):
    hub = make_hub(stuck_threshold_ms=400, sweep_interval_ms=100)
    agent = hub.agent("a1")
    task_id = hub.submit()
    first = accepted(agent, task_id)
    pushed = agent.recv("task_cancelled", task_id=task_id)
    assert pushed["reason"] == "stuck"
    # Back in the queue and, this being the only agent, offered again.
    agent.recv("task_assign", task_id=task_id, generation=first["generation"] + 1)


def test_acceptance_timeout_is_pushed(make_hub):
    hub = make_hub(acceptance_timeout_ms=300)
    agent = hub.agent("a1")
    task_id = hub.submit()
    first = agent.recv("task_assign", task_id=task_id)
    assert agent.recv("task_cancelled", task_id=task_id)["reason"] == "acceptance_timeout"
    agent.recv("task_assign", task_id=task_id, generation=first["generation"] + 1)


def test_overdue_task_is_pushed(make_hub):
    hub = make_hub(sweep_interval_ms=100)
    agent = hub.agent("a1")
    task_id = hub.submit("past due", complete_by=now_ms() - 1000, max_retries=1)
    # Not accepted first: overdue from the start, it may be swept before an
    # accept would arrive (a loaded machine), and the push is the same either way.
    agent.recv("task_assign", task_id=task_id)
    assert agent.recv("task_cancelled", task_id=task_id)["reason"] == "overdue"
    assert hub.task(task_id)["status"] == "dead_letter"


def test_a_long_poll_ends_when_the_task_is_cancelled(hub):
    task_id = hub.submit()
    answers = []
    waiter = threading.Thread(
        target=lambda: answers.append(hub.api("GET", f"/api/tasks/{task_id}?wait=30"))
    )
    waiter.start()
    # The waiter is registered before the task is read: whichever comes first,
    # the answer reports the cancel.
    assert cancel(hub, task_id).status == 200
    waiter.join(20)
    assert not waiter.is_alive()
    assert answers[0].body["status"] == "cancelled"


def test_the_event_stream_and_metrics_report_the_cancel(hub):
    stream = SseClient(
        hub.http_url, "/api/events?types=task_cancelled", {"Authorization": f"Bearer {hub.token}"}
    )
    try:
        assert stream.status == 200
        agent = hub.agent("a1")
        task_id = hub.submit()
        agent.recv("task_assign", task_id=task_id)
        assert cancel(hub, task_id, {"reason": "why not"}).status == 200
        event = stream.next()
        assert event.event == "task_cancelled"
        assert {k: event.data[k] for k in ("task_id", "agent_id", "cancelled_by", "reason")} == {
            "task_id": task_id,
            "agent_id": "a1",
            "cancelled_by": "submitter",
            "reason": "why not",
        }
        assert event.data["previous_status"] == "assigned"
    finally:
        stream.close()
    _, samples = scrape(hub.http_url)
    assert samples[("agentcom_tasks_cancelled_total", ())] == 1
    assert samples[("agentcom_tasks", (("status", "cancelled"),))] == 1


def test_a_cancelled_task_survives_sigkill_as_cancelled(tmp_path, clients, processes):
    data = tmp_path / "data"
    submitter, worker = cli_token(data, "submitter"), cli_token(data, "a1")
    first = HubProcess(data)
    processes.append(first)
    reply = http("POST", first.http_url + "/api/tasks", {"description": "x"}, token=submitter)
    task_id = reply.body["task_id"]
    cancelled = http("POST", f"{first.http_url}/api/tasks/{task_id}/cancel", token=submitter)
    assert cancelled.status == 200
    first.kill()  # SIGKILL right after the reply

    second = HubProcess(data)
    processes.append(second)
    task = http("GET", f"{second.http_url}/api/tasks/{task_id}", token=submitter).body
    assert task["status"] == "cancelled"
    assert events(task)[-1] == "cancelled"
    agent = WsAgent(clients, second.ws_url)
    assert agent.identify("a1", worker)["type"] == "identified"
    later = http("POST", second.http_url + "/api/tasks", {"description": "y"}, token=submitter)
    agent.recv("task_assign", task_id=later.body["task_id"])
    assert agent.pending("task_assign") == []
    agent.close()
