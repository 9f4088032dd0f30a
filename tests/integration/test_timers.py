"""Timed recovery on a real hub with short timers: acceptance timeout, stuck and overdue
sweeps, and the ping timeout for a connection that goes silent."""

from __future__ import annotations

import time

from tests.integration.helpers import SilentSocket, events, now_ms
from tests.waiting import wait_until


def flags_of(hub, agent_id):
    states = {s["agent_id"]: s for s in hub.api("GET", "/api/agents/states").body["agents"]}
    return states[agent_id]["flags"]


def test_acceptance_timeout_requeues_and_flags_the_agent(make_hub):
    hub = make_hub(acceptance_timeout_ms=500)
    task_id = hub.submit()
    lazy = hub.agent("lazy")
    first = lazy.recv("task_assign", task_id=task_id)
    assert flags_of(hub, "lazy") == []

    # Not accepted in time: back to the queue, and (only agent) offered again.
    second = lazy.recv("task_assign", task_id=task_id, generation=first["generation"] + 1)
    task = hub.task(task_id)
    assert events(task)[:4] == ["queued", "assigned", "reclaimed", "assigned"]
    reclaimed = events(task, "reclaimed")[0]
    assert reclaimed["cause"] == "acceptance_timeout"
    assert flags_of(hub, "lazy") == ["unresponsive"]

    # Accepting clears the flag.
    lazy.send({"type": "task_accepted", "task_id": task_id})
    lazy.recv("task_ack", task_id=task_id, status="accepted")
    assert flags_of(hub, "lazy") == []
    generation = hub.task(task_id)["generation"]
    assert generation >= second["generation"]
    lazy.send({"type": "task_complete", "task_id": task_id, "generation": generation})
    lazy.recv("task_ack", task_id=task_id, status="complete")


def test_unflagged_agents_are_preferred_but_flagged_ones_still_get_work(make_hub):
    hub = make_hub(acceptance_timeout_ms=1000)
    doomed = hub.submit("lets it time out", max_retries=1)
    lazy = hub.agent("lazy")
    first = lazy.recv("task_assign", task_id=doomed)
    second = lazy.recv(
        "task_assign", task_id=doomed, generation=first["generation"] + 1, timeout=10
    )
    lazy.send(
        {"type": "task_failed", "task_id": doomed, "generation": second["generation"], "error": "x"}
    )
    lazy.recv("task_ack", task_id=doomed, status="dead_letter")
    assert flags_of(hub, "lazy") == ["unresponsive"]  # idle, flagged, idle the longest

    fresh = hub.agent("fresh")
    preferred = hub.submit("goes to the unflagged agent")
    fresh.recv("task_assign", task_id=preferred)
    assert hub.task(preferred)["assigned_to"] == "fresh"

    fallback = hub.submit("no unflagged agent is idle")
    lazy.recv("task_assign", task_id=fallback)
    lazy.send({"type": "task_accepted", "task_id": fallback})
    lazy.recv("task_ack", task_id=fallback, status="accepted")
    assert flags_of(hub, "lazy") == []
    assert events(hub.task(fallback)) == ["queued", "assigned"]


def test_stuck_task_is_reclaimed(make_hub):
    hub = make_hub(stuck_threshold_ms=400, sweep_interval_ms=100)
    task_id = hub.submit()
    agent = hub.agent("a1")
    first = agent.recv("task_assign", task_id=task_id)
    agent.send({"type": "task_accepted", "task_id": task_id})
    agent.recv("task_ack", status="accepted")
    # no progress: the sweep takes it back and the only agent is offered it again
    agent.recv("task_assign", task_id=task_id, generation=first["generation"] + 1)
    task = hub.task(task_id)
    assert events(task)[:4] == ["queued", "assigned", "reclaimed", "assigned"]
    assert events(task, "reclaimed")[0]["cause"] == "stuck"
    assert task["retry_count"] == 0


def test_progress_keeps_a_task_from_being_stuck(make_hub):
    hub = make_hub(stuck_threshold_ms=400, sweep_interval_ms=100)
    task_id = hub.submit()
    agent = hub.agent("a1")
    first = agent.recv("task_assign", task_id=task_id)
    agent.send({"type": "task_accepted", "task_id": task_id})
    agent.recv("task_ack", status="accepted")

    # Report progress well inside the threshold for three thresholds' time.
    end = time.monotonic() + 1.2
    while time.monotonic() < end:
        agent.send({"type": "task_progress", "task_id": task_id, "progress": 10})
        time.sleep(0.1)  # pacing the reports, not waiting for the hub
    agent.round_trip()
    task = hub.task(task_id)
    assert task["status"] == "assigned"
    assert task["generation"] == first["generation"]
    assert "reclaimed" not in events(task)

    # Progress stops: the same sweep now takes it back.
    agent.recv("task_assign", task_id=task_id, generation=first["generation"] + 1)
    assert events(hub.task(task_id), "reclaimed")[0]["cause"] == "stuck"


def test_overdue_assigned_task_is_reclaimed(make_hub):
    hub = make_hub(sweep_interval_ms=100)
    complete_by = now_ms() - 1000
    # capabilities keep each task with its own agent, whatever the sweep does
    late = hub.submit(
        "already late", complete_by=complete_by, needed_capabilities=["late"], max_retries=50
    )
    on_time = hub.submit("no deadline", needed_capabilities=["slow"])
    agent = hub.agent("a1", ["late"])
    first = agent.recv("task_assign", task_id=late)
    assert first["complete_by"] == complete_by
    other = hub.agent("a2", ["slow"])
    other_assign = other.recv("task_assign", task_id=on_time)
    other.send({"type": "task_accepted", "task_id": on_time})
    other.recv("task_ack", status="accepted")

    again = agent.recv("task_assign", task_id=late, generation=first["generation"] + 1)
    assert again["complete_by"] == complete_by
    task = hub.task(late)
    assert events(task)[:4] == ["queued", "assigned", "reclaimed", "assigned"]
    assert events(task, "reclaimed")[0]["cause"] == "overdue"
    # a sweep after the task without a deadline was accepted leaves that task alone
    swept = hub.task(late)["generation"]
    agent.recv("task_assign", task_id=late, generation=swept + 1)
    kept = hub.task(on_time)
    assert kept["status"] == "assigned"
    assert kept["generation"] == other_assign["generation"]
    assert "reclaimed" not in events(kept)


def test_silent_connection_is_closed_and_its_task_reclaimed(make_hub):
    hub = make_hub(ping_timeout_ms=600)
    task_id = hub.submit()
    host, port = hub.http_url.removeprefix("http://").split(":")
    silent = SilentSocket(host, int(port))
    try:
        silent.send(
            {"type": "identify", "agent_id": "silent", "token": hub.thread.create_token("silent")}
        )
        wait_until(
            lambda: (t := hub.task(task_id))["assigned_to"] == "silent" or t["status"],
            what="assignment to the silent agent",
        )
        talker = hub.agent("talker")  # tornado's client answers the hub's pings

        again = talker.recv("task_assign", task_id=task_id)
        assert again["generation"] == 2
        silent.wait_dropped(timeout=5)
        task = hub.task(task_id)
        assert events(task) == ["queued", "assigned", "reclaimed", "assigned"]
        assert events(task, "reclaimed")[0]["cause"] == "disconnected"
        assert [a["agent_id"] for a in hub.api("GET", "/api/agents").body["agents"]] == ["talker"]
    finally:
        silent.close()

    # An agent that answers pings outlives several ping timeouts.
    assert not talker.closed.wait(2.0), f"talker closed with code {talker.close_code}"
    talker.round_trip()
